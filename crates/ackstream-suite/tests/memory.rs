//! The behaviour suite against the in-memory broker.

ackstream_suite::behaviour_suite!(ackstream_suite::MemoryFixture::new());
