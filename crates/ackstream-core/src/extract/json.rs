//! `Json<T>`: the payload decoded as JSON.

use serde::de::DeserializeOwned;

use super::{FromMessage, Rejection};
use crate::message::KafkaMessage;
use crate::state::StateMap;

/// The payload decoded from JSON into `T`. A payload that does not decode is a decode error
/// naming the reason; the handler is not called.
///
/// ```
/// use ackstream_core::extract::Json;
/// #[derive(serde::Deserialize)]
/// struct Order { id: u64 }
/// async fn handler(Json(order): Json<Order>) {
///     println!("order {}", order.id);
/// }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Json<T>(pub T);

impl<T: DeserializeOwned> FromMessage for Json<T> {
    const READS_HEADERS: bool = false;

    fn from_message(msg: &KafkaMessage, _: &StateMap) -> Result<Self, Rejection> {
        serde_json::from_slice(msg.payload())
            .map(Json)
            .map_err(|e| {
                Rejection::new(
                    std::any::type_name::<T>(),
                    format_args!("invalid JSON: {e}"),
                )
            })
    }
}
