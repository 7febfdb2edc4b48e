//! Return values: what a handler returns to be published. A subscriber with
//! [`publish_to`](crate::SubscriberBuilder::publish_to) publishes it to each of those topics (and,
//! when the input carries a [`REPLY_TO`] header, to that topic too), and acks the input only once
//! the broker confirmed every output (see `settle`'s "publish first" step).
//!
//! A handler returns `Bytes`, `String`, `&'static str` or `Vec<u8>` (published as they are),
//! [`Json<T>`](crate::extract::Json) (encoded as JSON), a [`Response<T>`] of one of those
//! (with a key, headers or a partition), or an `Option` of any of them (`None` publishes nothing).
//! Why `Json(value)` and not any `Serialize` value: `()` and `String` are `Serialize` too, and
//! mean something else here.

use bytes::Bytes;

use crate::error::HandlerError;
pub use crate::outcome::Output;
use crate::outcome::{IntoOutcome, Outcome};
use crate::record::{Header, Headers};

/// Header naming the topic a reply goes to (as FastStream names it).
pub const REPLY_TO: &str = "reply_to";
/// Header tying a reply to its request; an output carries its input's.
pub const CORRELATION_ID: &str = "correlation_id";

/// A return value with a key, headers or a partition.
///
/// ```
/// use ackstream_core::Response;
/// use ackstream_core::extract::Json;
/// #[derive(serde::Serialize)]
/// struct Shipped { order: u64 }
/// async fn ship(order: String) -> Response<Json<Shipped>> {
///     Response::new(Json(Shipped { order: order.len() as u64 }))
///         .key(order)
///         .header("source", "shipping")
/// }
/// ```
#[derive(Clone, Debug)]
pub struct Response<T> {
    body: T,
    key: Option<Bytes>,
    headers: Headers,
    partition: Option<i32>,
}

impl<T> Response<T> {
    /// A response carrying `body`.
    pub fn new(body: T) -> Self {
        Self {
            body,
            key: None,
            headers: Headers::new(),
            partition: None,
        }
    }

    /// The key of the output.
    #[must_use]
    pub fn key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// A header on the output.
    #[must_use]
    pub fn header(mut self, key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.headers.push(Header {
            key: key.into(),
            value: Some(value.into()),
        });
        self
    }

    /// The partition of the output, whatever its key.
    #[must_use]
    pub fn partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }
}

/// A value that becomes an output's payload. Encoding may fail (JSON of a map with non-string
/// keys): that is a handler failure, and the policy decides.
pub trait IntoPayload {
    /// The payload's bytes.
    fn into_payload(self) -> Result<Bytes, HandlerError>;
}

impl IntoPayload for Bytes {
    fn into_payload(self) -> Result<Bytes, HandlerError> {
        Ok(self)
    }
}

impl IntoPayload for String {
    fn into_payload(self) -> Result<Bytes, HandlerError> {
        Ok(self.into())
    }
}

impl IntoPayload for &'static str {
    fn into_payload(self) -> Result<Bytes, HandlerError> {
        Ok(Bytes::from_static(self.as_bytes()))
    }
}

impl IntoPayload for Vec<u8> {
    fn into_payload(self) -> Result<Bytes, HandlerError> {
        Ok(self.into())
    }
}

#[cfg(feature = "json")]
impl<T: serde::Serialize> IntoPayload for crate::extract::Json<T> {
    fn into_payload(self) -> Result<Bytes, HandlerError> {
        serde_json::to_vec(&self.0)
            .map(Bytes::from)
            .map_err(|e| HandlerError::from(format!("cannot encode the return value: {e}")))
    }
}

impl<T: IntoPayload> IntoOutcome for Response<T> {
    const OUTPUTS: bool = true;

    fn into_outcome(self) -> Outcome {
        match self.body.into_payload() {
            Ok(payload) => Outcome::Output(Box::new(Output {
                payload,
                key: self.key,
                headers: self.headers,
                partition: self.partition,
            })),
            Err(e) => Outcome::Failed(e),
        }
    }
}

fn payload_outcome(value: impl IntoPayload) -> Outcome {
    match value.into_payload() {
        Ok(payload) => Outcome::Output(Box::new(Output::new(payload))),
        Err(e) => Outcome::Failed(e),
    }
}

impl IntoOutcome for Bytes {
    const OUTPUTS: bool = true;

    fn into_outcome(self) -> Outcome {
        payload_outcome(self)
    }
}

impl IntoOutcome for String {
    const OUTPUTS: bool = true;

    fn into_outcome(self) -> Outcome {
        payload_outcome(self)
    }
}

impl IntoOutcome for &'static str {
    const OUTPUTS: bool = true;

    fn into_outcome(self) -> Outcome {
        payload_outcome(self)
    }
}

impl IntoOutcome for Vec<u8> {
    const OUTPUTS: bool = true;

    fn into_outcome(self) -> Outcome {
        payload_outcome(self)
    }
}

#[cfg(feature = "json")]
impl<T: serde::Serialize> IntoOutcome for crate::extract::Json<T> {
    const OUTPUTS: bool = true;

    fn into_outcome(self) -> Outcome {
        payload_outcome(self)
    }
}

impl<T: IntoOutcome> IntoOutcome for Option<T> {
    const OUTPUTS: bool = T::OUTPUTS;

    fn into_outcome(self) -> Outcome {
        match self {
            Some(value) => value.into_outcome(),
            None => Outcome::Success,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extract::Json;

    fn output(outcome: Outcome) -> Output {
        match outcome {
            Outcome::Output(o) => *o,
            other => panic!("not an output: {other:?}"),
        }
    }

    #[test]
    fn a_returned_value_becomes_its_output() {
        assert_eq!(output("x".into_outcome()).payload, "x");
        assert_eq!(output(String::from("y").into_outcome()).payload, "y");
        assert_eq!(output(Json(vec![1, 2]).into_outcome()).payload, "[1,2]");
        let o = output(
            Response::new(Bytes::from_static(b"z"))
                .key("k")
                .header("h", "v")
                .partition(3)
                .into_outcome(),
        );
        assert_eq!(
            (o.payload, o.key, o.headers.get_str("h"), o.partition),
            ("z".into(), Some("k".into()), Some("v"), Some(3))
        );
    }

    #[test]
    fn none_publishes_nothing() {
        assert!(matches!(None::<String>.into_outcome(), Outcome::Success));
        assert!(matches!(
            Ok::<_, HandlerError>(None::<String>).into_outcome(),
            Outcome::Success
        ));
    }

    #[test]
    fn a_value_that_does_not_encode_is_a_failure() {
        let mut map = std::collections::HashMap::new();
        map.insert((1, 2), 3);
        assert!(matches!(Json(map).into_outcome(), Outcome::Failed(_)));
    }
}
