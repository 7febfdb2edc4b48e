//! ackstream
