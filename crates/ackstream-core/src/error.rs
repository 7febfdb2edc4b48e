//! Error types: the handler error (which may carry an interrupt) and the framework's own errors.

use std::fmt;

use crate::interrupt::{AckMessage, Disposition, NackAfter, NackMessage, RejectMessage};

/// A type-erased error, the erasure point shared with tower, axum and async-nats.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The error a handler returns: either a failure (any error, boxed) or an interrupt.
///
/// Any `E: Into<BoxError>` converts into it with `?`, as do [`AckMessage`], [`NackMessage`],
/// [`NackAfter`] and [`RejectMessage`]. Like `anyhow::Error` it does not implement
/// `std::error::Error` itself, which is what keeps those conversions coherent.
///
/// ```
/// use ackstream_core::{HandlerError, RejectMessage};
/// let failure: HandlerError = "database unavailable".into();
/// assert!(failure.interrupt().is_none());
/// let interrupt: HandlerError = RejectMessage.into();
/// assert!(interrupt.interrupt().is_some());
/// ```
pub struct HandlerError(Repr);

enum Repr {
    Interrupt(Disposition),
    Failure(BoxError),
}

impl HandlerError {
    /// The settle this error asks for, if it is an interrupt.
    pub fn interrupt(&self) -> Option<Disposition> {
        match &self.0 {
            Repr::Interrupt(d) => Some(*d),
            Repr::Failure(_) => None,
        }
    }

    /// The underlying failure, if this is not an interrupt.
    pub fn failure(&self) -> Option<&(dyn std::error::Error + Send + Sync + 'static)> {
        match &self.0 {
            Repr::Failure(e) => Some(e.as_ref()),
            Repr::Interrupt(_) => None,
        }
    }

    /// An interrupt with the given disposition.
    pub fn from_disposition(d: Disposition) -> Self {
        Self(Repr::Interrupt(d))
    }
}

impl<E: Into<BoxError>> From<E> for HandlerError {
    fn from(e: E) -> Self {
        Self(Repr::Failure(e.into()))
    }
}

impl From<AckMessage> for HandlerError {
    fn from(i: AckMessage) -> Self {
        Self::from_disposition(i.into())
    }
}

impl From<NackMessage> for HandlerError {
    fn from(i: NackMessage) -> Self {
        Self::from_disposition(i.into())
    }
}

impl From<NackAfter> for HandlerError {
    fn from(i: NackAfter) -> Self {
        Self::from_disposition(i.into())
    }
}

impl From<RejectMessage> for HandlerError {
    fn from(i: RejectMessage) -> Self {
        Self::from_disposition(i.into())
    }
}

impl fmt::Debug for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Repr::Interrupt(d) => write!(f, "HandlerError::Interrupt({d:?})"),
            Repr::Failure(e) => write!(f, "HandlerError::Failure({e:?})"),
        }
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Repr::Interrupt(d) => write!(f, "interrupt: {d:?}"),
            Repr::Failure(e) => fmt::Display::fmt(e, f),
        }
    }
}

/// A subscriber or application that cannot run as configured. Raised at registration (or at the
/// latest when the app starts), before any record is consumed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// A policy that commits was chosen for a subscriber without a consumer group.
    PolicyNeedsGroup {
        /// The subscriber's topics.
        topics: String,
        /// The policy that needs a group.
        policy: crate::AckPolicy,
    },
    /// Two settings that each choose the policy were both given.
    ConflictingPolicy {
        /// The subscriber's topics.
        topics: String,
        /// What the first setting chose.
        first: String,
        /// What the second setting chose.
        second: String,
    },
    /// A subscriber without any topic.
    NoTopics,
    /// A setting with a value it cannot take.
    InvalidSetting {
        /// The setting's name.
        setting: &'static str,
        /// Why the value cannot be used.
        reason: String,
    },
    /// A handler extracts `State<T>` but no state of that type was given.
    MissingState {
        /// The missing state's type name.
        type_name: &'static str,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::PolicyNeedsGroup { topics, policy } => write!(
                f,
                "subscriber to {topics}: ack policy {policy:?} commits offsets and needs a consumer group; \
                 set .group_id(..) or use AckPolicy::AckFirst"
            ),
            ConfigError::ConflictingPolicy {
                topics,
                first,
                second,
            } => write!(
                f,
                "subscriber to {topics}: {first} and {second} both choose the ack policy; keep one"
            ),
            ConfigError::NoTopics => write!(f, "a subscriber needs at least one topic"),
            ConfigError::InvalidSetting { setting, reason } => {
                write!(f, "invalid setting {setting}: {reason}")
            }
            ConfigError::MissingState { type_name } => write!(
                f,
                "a handler extracts State<{type_name}> but no state of that type was given; \
                 call .with_state(..) on the broker"
            ),
        }
    }
}

impl std::error::Error for ConfigError {}

/// What kind of failure a [`BackendError`] is: what a caller can do about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BackendErrorKind {
    /// Transient: the same call may succeed later (a broker unreachable or restarting, a
    /// leader moving, a timeout, a full local queue, a group rebalancing).
    Retriable,
    /// The request itself cannot succeed (a record too large, an invalid topic name, an
    /// unknown topic or partition): retrying it unchanged fails again.
    Invalid,
    /// The client cannot go on (fenced by a newer instance, not authorized, a fatal client
    /// error): the subscriber or the publisher stops.
    Fatal,
    /// Not classified.
    Other,
}

/// An error from a backend (the Kafka client or the in-memory broker), with its
/// [kind](BackendErrorKind).
///
/// ```
/// use ackstream_core::{BackendError, BackendErrorKind};
/// let e = BackendError::new("broker unreachable").with_kind(BackendErrorKind::Retriable);
/// assert!(e.is_retriable());
/// assert!(!BackendError::new("record too large").is_retriable());
/// ```
#[derive(Debug)]
pub struct BackendError {
    kind: BackendErrorKind,
    message: String,
    source: Option<BoxError>,
}

impl BackendError {
    /// A backend error with a message, of kind [`Other`](BackendErrorKind::Other).
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            kind: BackendErrorKind::Other,
            message: message.into(),
            source: None,
        }
    }

    /// A backend error with a message and its cause, of kind [`Other`](BackendErrorKind::Other).
    pub fn with_source(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self {
            kind: BackendErrorKind::Other,
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// The same error, of kind `kind`.
    #[must_use]
    pub fn with_kind(mut self, kind: BackendErrorKind) -> Self {
        self.kind = kind;
        self
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> BackendErrorKind {
        self.kind
    }

    /// Whether the same call may succeed if tried again later.
    pub fn is_retriable(&self) -> bool {
        self.kind == BackendErrorKind::Retriable
    }
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Some(s) => write!(f, "{}: {s}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for BackendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as _)
    }
}
