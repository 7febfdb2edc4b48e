//! The settle rule: what a settle of one delivery becomes. Every settle goes through here,
//! whoever makes it (the handler through [`KafkaMessage`](crate::KafkaMessage), an interrupt,
//! the ack policy, another task or thread holding the message):
//!
//! 1. a nack of a delivery at or past the subscriber's attempt limit becomes a reject;
//! 2. a reject, when the subscriber has a dead-letter topic, is published there first, and is
//!    applied as a reject only once the broker confirmed it;
//! 3. if that publish fails, the record is nacked instead (after [`DEAD_LETTER_RETRY`]): it
//!    stays unfinished, nothing commits past it, and it comes back;
//! 4. everything else is applied as given.
//!
//! [`ledger`] applies the result to the partition's tracker; [`dead_letter`] builds and
//! publishes the dead letter.

pub mod dead_letter;
pub(crate) mod ledger;

use std::time::Duration;

pub(crate) use ledger::{Delivery, PartitionContext, Retry, SettleConfig};

use crate::interrupt::{Disposition, SettleStatus};
use crate::record::Record;
use crate::tracker::DeliveryId;

/// How long a record whose dead letter could not be published waits before it is delivered
/// again (the dead-letter topic may be back by then).
pub(crate) const DEAD_LETTER_RETRY: Duration = Duration::from_secs(1);

/// What a settle becomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Plan {
    /// Applied to the ledger at once.
    Apply(Disposition),
    /// Published as a dead letter first, then applied as a reject (or, if the publish fails,
    /// as a nack).
    DeadLetterFirst,
}

/// Whether delivery `attempt` has used up `limit` attempts. The one place the attempt limit is
/// checked.
pub(crate) fn out_of_attempts(attempt: u32, limit: Option<u32>) -> bool {
    limit.is_some_and(|limit| attempt >= limit)
}

/// What settling delivery `attempt` of `record` with `disposition` becomes, under an attempt
/// `limit`, with or without a dead-letter topic.
#[inline]
pub(crate) fn plan(
    record: &Record,
    attempt: u32,
    disposition: Disposition,
    limit: Option<u32>,
    dead_letters: bool,
) -> Plan {
    let disposition = match disposition {
        Disposition::Nack { .. } if out_of_attempts(attempt, limit) => {
            tracing::warn!(
                topic = %record.topic,
                partition = record.partition,
                offset = record.offset,
                attempt,
                "record ran out of attempts; rejecting instead of nacking"
            );
            Disposition::Reject
        }
        d => d,
    };
    match disposition {
        Disposition::Reject if dead_letters => Plan::DeadLetterFirst,
        d => Plan::Apply(d),
    }
}

/// Publishes `record` as a dead letter (`why`: the reason it carries), then applies the reject;
/// if the publish fails, applies a nack instead, so nothing is committed past the record.
pub(crate) async fn dead_letter_first(
    ctx: &PartitionContext,
    record: &Record,
    id: DeliveryId,
    attempt: u32,
    why: &str,
) -> SettleStatus {
    let Some(dead_letters) = &ctx.config.dead_letters else {
        return ctx.apply(record, id, Disposition::Reject);
    };
    match dead_letters.publish(record, attempt, why).await {
        Ok(_) => ctx.apply(record, id, Disposition::Reject),
        Err(e) => {
            tracing::error!(
                topic = %record.topic,
                partition = record.partition,
                offset = record.offset,
                dead_letter_topic = %dead_letters.topic,
                error = %e,
                "dead letter not published: the record is nacked, not committed"
            );
            let retry = Disposition::Nack {
                delay: Some(DEAD_LETTER_RETRY),
            };
            ctx.apply(record, id, retry)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
