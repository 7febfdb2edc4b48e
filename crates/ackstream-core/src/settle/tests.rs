//! The settle rule's tests: what a settle becomes, and a dead letter abandoned midway.

use super::*;

/// A record for the tests.
fn record() -> Record {
    Record {
        topic: "t".into(),
        partition: 0,
        offset: 7,
        key: None,
        headers: Default::default(),
        timestamp: None,
        payload: "x".into(),
    }
}

mod plan {
    use super::*;

    const NACK: Disposition = Disposition::Nack { delay: None };

    #[test]
    fn a_nack_within_the_attempt_limit_stays_a_nack() {
        assert_eq!(plan(&record(), 2, NACK, Some(3), true), Plan::Apply(NACK));
        assert_eq!(plan(&record(), 9, NACK, None, true), Plan::Apply(NACK));
    }

    #[test]
    fn a_nack_at_the_attempt_limit_becomes_a_reject() {
        let r = Disposition::Reject;
        assert_eq!(plan(&record(), 3, NACK, Some(3), false), Plan::Apply(r));
        assert_eq!(plan(&record(), 4, NACK, Some(3), false), Plan::Apply(r));
    }

    #[test]
    fn a_reject_with_a_dead_letter_topic_is_published_first() {
        let r = Disposition::Reject;
        assert_eq!(plan(&record(), 1, r, None, true), Plan::DeadLetterFirst);
        assert_eq!(
            plan(&record(), 3, NACK, Some(3), true),
            Plan::DeadLetterFirst
        );
        assert_eq!(plan(&record(), 1, r, None, false), Plan::Apply(r));
    }

    #[test]
    fn an_ack_is_applied_as_given() {
        let a = Disposition::Ack;
        assert_eq!(plan(&record(), 5, a, Some(1), true), Plan::Apply(a));
    }
}

mod cancelled {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use futures_util::future::BoxFuture;

    use super::dead_letter::DeadLetters;
    use super::*;
    use crate::backend::{OffsetStore, PartitionOffset};
    use crate::error::BackendError;
    use crate::message::KafkaMessage;
    use crate::record::TopicPartition;

    /// Offsets stored, for the test to read.
    #[derive(Default, Clone)]
    struct Stored(Arc<Mutex<Vec<i64>>>);

    impl PartitionOffset for Stored {
        fn store(&self, offset: i64) {
            self.0.lock().unwrap().push(offset);
        }
    }

    impl OffsetStore for Stored {
        fn partition(&self, _: &TopicPartition) -> Arc<dyn PartitionOffset> {
            Arc::new(self.clone())
        }
        fn commit(&self) -> BoxFuture<'_, Result<(), BackendError>> {
            Box::pin(async { Ok(()) })
        }
    }

    /// A partition whose dead-letter topic takes `publish_takes` to refuse a letter.
    fn partition(publish_takes: Duration) -> (Arc<PartitionContext>, Stored) {
        let letters = DeadLetters::new(
            "dlq",
            Arc::new(move |_| {
                Box::pin(async move {
                    tokio::time::sleep(publish_takes).await;
                    Err(BackendError::new("dead-letter topic too slow"))
                })
            }),
        );
        let config = Arc::new(SettleConfig {
            max_attempts: None,
            observer: None,
            dead_letters: Some(letters),
            outputs: None,
            tracing: None,
            group: None,
            timed: false,
        });
        let stored = Stored::default();
        let tp = TopicPartition::new("t", 0);
        let ctx = PartitionContext::new(tp, Arc::new(stored.clone()), config, false);
        (Arc::new(ctx), stored)
    }

    /// A record read from the feed once the partition stopped dispatching (its revoke began)
    /// is not delivered: decided under the lock `stop_dispatching` takes, so a fresh delivery
    /// is reported before the stop or not made at all, as a redelivery is. (It was delivered,
    /// so its handler could start after the revoke began.)
    #[test]
    fn a_record_read_after_its_partition_stopped_is_not_delivered() {
        let (ctx, stored) = partition(Duration::from_secs(1));
        assert!(matches!(ctx.deliver(6), Delivery::Accepted(_)));
        ctx.stop_dispatching();
        let late = ctx.deliver(7);
        assert!(matches!(late, Delivery::Stopped), "{late:?}");
        assert!(stored.0.lock().unwrap().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_dead_letter_publish_cancelled_midway_nacks_the_record() {
        let (ctx, stored) = partition(Duration::from_secs(5));
        let Delivery::Accepted(d) = ctx.deliver(record().offset) else {
            panic!("delivered");
        };
        let msg = KafkaMessage::new(record(), d.id, d.attempt, ctx.clone());
        // A timeout around the handler (or a select!) drops the reject mid-publish.
        let cancelled = tokio::time::timeout(Duration::from_millis(10), msg.reject()).await;
        assert!(cancelled.is_err(), "the reject was still publishing");
        // The record is not left claimed and unapplied: it is nacked, so it comes back.
        assert!(
            ctx.retry_pending(),
            "the record waits to be delivered again"
        );
        assert!(
            stored.0.lock().unwrap().is_empty(),
            "nothing committed past it"
        );
        assert_eq!(msg.nack().await.unwrap(), SettleStatus::AlreadySettled);
    }

    /// A partition publishing its outputs through `try_enqueue` (no dead letters).
    fn with_outputs(
        try_enqueue: Arc<TryEnqueueFn>,
    ) -> (Arc<PartitionContext>, Stored, output::Outputs) {
        let unused = || -> BackendError { BackendError::new("not used by this test") };
        let outputs = output::Outputs::new(
            &["out".to_owned()],
            false,
            Arc::new(move |_| Box::pin(std::future::ready(Err(unused())))),
            Arc::new(|_, done: DeliveryCallback| {
                Box::pin(async move { done.call(Err(BackendError::new("not used"))) })
            }),
            try_enqueue,
            None,
        );
        let config = Arc::new(SettleConfig {
            max_attempts: None,
            observer: None,
            dead_letters: None,
            outputs: Some(outputs.clone()),
            tracing: None,
            group: None,
            timed: false,
        });
        let stored = Stored::default();
        let ctx = PartitionContext::new(
            TopicPartition::new("t", 0),
            Arc::new(stored.clone()),
            config,
            false,
        );
        (Arc::new(ctx), stored, outputs)
    }

    /// Hands one output of a delivered input to `outputs`; returns the input's message.
    fn publish_one(ctx: &Arc<PartitionContext>, outputs: &output::Outputs) -> KafkaMessage {
        let Delivery::Accepted(d) = ctx.deliver(record().offset) else {
            panic!("delivered");
        };
        let msg = KafkaMessage::new(record(), d.id, d.attempt, ctx.clone());
        let permit = outputs.in_flight.clone().try_acquire_owned().unwrap();
        let rest = outputs.publish_then_ack(
            msg.claim().expect("not settled yet"),
            output::Records::One(OutgoingRecord::new("out", "x")),
            Disposition::Nack { delay: None },
            permit,
        );
        assert!(rest.is_none(), "the producer took the output at once");
        msg
    }

    /// The answer of an output the producer took but can never answer (a producer purged or
    /// gone at shutdown drops the record's callback uncalled) nacks the input: nothing is
    /// committed past it and it comes back. The callback holds the waiting input inline, so
    /// dropping it is what settles the input.
    // (Inside a runtime, as every subscriber's outputs are.)
    #[tokio::test]
    #[allow(clippy::result_large_err)] // the hand-over's signature: given back when full
    async fn an_output_whose_answer_never_comes_nacks_its_input() {
        let (ctx, stored, outputs) = with_outputs(Arc::new(|_, done| {
            drop(done);
            Ok(())
        }));
        let msg = publish_one(&ctx, &outputs);
        assert!(ctx.retry_pending(), "the input waits to be delivered again");
        assert!(
            stored.0.lock().unwrap().is_empty(),
            "nothing committed past it"
        );
        assert_eq!(
            outputs.in_flight.available_permits(),
            output::OUTPUTS_IN_FLIGHT
        );
        drop(msg);
    }

    /// The same input, its output confirmed: acked and stored, once, and the permit is back.
    // (Inside a runtime, as every subscriber's outputs are.)
    #[tokio::test]
    #[allow(clippy::result_large_err)] // the hand-over's signature: given back when full
    async fn an_output_confirmed_acks_its_input_once() {
        let (ctx, stored, outputs) = with_outputs(Arc::new(|_, done: DeliveryCallback| {
            done.call(Ok(crate::record::RecordPosition {
                partition: 0,
                offset: 0,
            }));
            Ok(())
        }));
        let msg = publish_one(&ctx, &outputs);
        assert!(!ctx.retry_pending());
        assert_eq!(*stored.0.lock().unwrap(), [record().offset + 1]);
        assert_eq!(
            outputs.in_flight.available_permits(),
            output::OUTPUTS_IN_FLIGHT
        );
        drop(msg);
    }
}
