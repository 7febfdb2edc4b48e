//! Handlers: plain async functions whose arguments are extractors.
//!
//! Any `async fn` (or closure returning a future) taking up to 12 extractors, in any order, and
//! returning `()` or `Result<(), E>` with `E` any error convertible to a boxed error (or an
//! interrupt), is a [`Handler`].
//!
//! ```
//! use ackstream_core::{Handler, HandlerError, KafkaMessage, extract::Key};
//! async fn zero() {}
//! async fn one(body: String) -> Result<(), std::io::Error> { Ok(()) }
//! async fn three(Key(k): Key, msg: KafkaMessage, body: bytes::Bytes) -> Result<(), HandlerError> { Ok(()) }
//! fn assert_handler<T, H: Handler<T>>(_: H) {}
//! assert_handler(zero);
//! assert_handler(one);
//! assert_handler(three);
//! ```

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;

pub(crate) mod batch;
pub(crate) mod service;

use crate::error::ConfigError;
use crate::extract::{FromMessage, Rejection};
use crate::message::KafkaMessage;
use crate::outcome::{IntoOutcome, Outcome};
use crate::state::StateMap;

/// Something that handles a message: implemented for async functions of extractors.
/// `T` is a marker that keeps the impls for different arities apart.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an ackstream handler",
    label = "not a handler: check each argument and the return type",
    note = "a handler is an async fn of up to 12 arguments, each an extractor (String, Bytes, \
            Vec<u8>, Json<T>, KafkaMessage, Key, Headers, State<T>, Attempt, Partition, Offset, or a type \
            implementing FromMessage), returning (), Result<(), E> with E: Into<HandlerError>, or a value to publish (String, Bytes, Json<T>, Response<T>, Option<_>)"
)]
pub trait Handler<T>: Clone + Send + Sync + 'static {
    /// The future of one call.
    type Future: Future<Output = Outcome> + Send + 'static;

    /// Extracts the arguments and calls the handler.
    fn call(&self, msg: &KafkaMessage, state: &StateMap) -> Self::Future;

    /// Checks before anything is consumed that every argument can be extracted.
    fn check(state: &StateMap) -> Result<(), ConfigError>;

    /// Whether any argument reads the record's headers (see [`FromMessage::READS_HEADERS`]).
    const READS_HEADERS: bool;

    /// Whether the handler may return a value to publish (see [`IntoOutcome::OUTPUTS`]).
    const OUTPUTS: bool;
}

pin_project! {
    /// The future of a handler call: its arguments were refused, or it is running.
    pub struct HandlerFuture<F> {
        #[pin]
        inner: Inner<F>,
    }
}

pin_project! {
    #[project = InnerProj]
    enum Inner<F> {
        Rejected { rejection: Option<Rejection> },
        Running { #[pin] future: F },
    }
}

impl<F> HandlerFuture<F> {
    fn rejected(rejection: Rejection) -> Self {
        Self {
            inner: Inner::Rejected {
                rejection: Some(rejection),
            },
        }
    }

    fn running(future: F) -> Self {
        Self {
            inner: Inner::Running { future },
        }
    }
}

impl<F> std::fmt::Debug for HandlerFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.inner {
            Inner::Rejected { rejection } => f.debug_tuple("Rejected").field(rejection).finish(),
            Inner::Running { .. } => f.write_str("Running(..)"),
        }
    }
}

impl<F> Future for HandlerFuture<F>
where
    F: Future,
    F::Output: IntoOutcome,
{
    type Output = Outcome;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome> {
        match self.project().inner.project() {
            InnerProj::Rejected { rejection } => Poll::Ready(Outcome::Rejected(
                rejection
                    .take()
                    .expect("HandlerFuture polled after completion"),
            )),
            InnerProj::Running { future } => future.poll(cx).map(IntoOutcome::into_outcome),
        }
    }
}

impl<F, Fut> Handler<((),)> for F
where
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: IntoOutcome,
{
    type Future = HandlerFuture<Fut>;

    const READS_HEADERS: bool = false;
    const OUTPUTS: bool = <Fut::Output as IntoOutcome>::OUTPUTS;

    fn call(&self, _: &KafkaMessage, _: &StateMap) -> Self::Future {
        HandlerFuture::running(self())
    }

    fn check(_: &StateMap) -> Result<(), ConfigError> {
        Ok(())
    }
}

macro_rules! impl_handler {
    ([$($ty:ident),*], $last:ident) => {
        #[allow(non_snake_case)]
        #[diagnostic::do_not_recommend]
        impl<F, Fut, $($ty,)* $last> Handler<($($ty,)* $last,)> for F
        where
            F: Fn($($ty,)* $last) -> Fut + Clone + Send + Sync + 'static,
            Fut: Future + Send + 'static,
            Fut::Output: IntoOutcome,
            $( $ty: FromMessage + Send + 'static, )*
            $last: FromMessage + Send + 'static,
        {
            type Future = HandlerFuture<Fut>;

            const READS_HEADERS: bool = $( $ty::READS_HEADERS || )* $last::READS_HEADERS;
            const OUTPUTS: bool = <Fut::Output as IntoOutcome>::OUTPUTS;

            fn call(&self, msg: &KafkaMessage, state: &StateMap) -> Self::Future {
                $(
                    let $ty = match $ty::from_message(msg, state) {
                        Ok(v) => v,
                        Err(r) => return HandlerFuture::rejected(r),
                    };
                )*
                let $last = match $last::from_message(msg, state) {
                    Ok(v) => v,
                    Err(r) => return HandlerFuture::rejected(r),
                };
                HandlerFuture::running(self($($ty,)* $last))
            }

            fn check(state: &StateMap) -> Result<(), ConfigError> {
                $( $ty::check(state)?; )*
                $last::check(state)
            }
        }
    };
}

all_the_tuples!(impl_handler);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extract::{Attempt, Key, Offset, Partition};
    use crate::record::Headers;
    use bytes::Bytes;

    fn reads_headers<T, H: Handler<T>>(_: H) -> bool {
        H::READS_HEADERS
    }

    #[test]
    fn a_handler_reads_headers_only_if_one_of_its_arguments_may() {
        assert!(!reads_headers(|| async {}));
        assert!(!reads_headers(|_: String| async {}));
        assert!(!reads_headers(
            |_: Bytes, _: Key, _: Attempt, _: Partition, _: Offset| async {}
        ));
        assert!(reads_headers(|_: String, _: Headers| async {}));
        // The message handle gives access to the headers.
        assert!(reads_headers(|_: KafkaMessage| async {}));
        assert!(reads_headers(|_: Vec<u8>, _: KafkaMessage, _: Key| async {}));
    }
}
