//! Every ack policy against every handler behaviour, with the expected outcome as a table.
//!
//! Each case publishes two records to a one-partition topic: record 0 is the one under test,
//! record 1 a plain record after it. The handler misbehaves only on record 0's first attempt
//! (so a redelivered record succeeds and nothing loops); under `Manual` it acks everything else
//! itself. When record 1 is settled the app shuts down (draining and committing), and the case
//! checks record 0's deliveries, the settles it went through, the offset the broker committed,
//! and that the stored offsets only ever moved forward (so no offset was committed twice).

use ackstream::extract::Json;
use ackstream::prelude::*;
use ackstream::{Disposition, TopicPartition};
use serde::{Deserialize, Serialize};

use crate::{Fixture, Recorder, unique};

/// What the handler does with record 0 on its first attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// Returns `Ok(())` without settling.
    ReturnsOk,
    /// Returns an error.
    ReturnsErr,
    /// Panics.
    Panics,
    /// Returns `Err(AckMessage)` from a function two calls deep, via `?`.
    InterruptAck,
    /// Returns `Err(NackMessage)` from two calls deep.
    InterruptNack,
    /// Returns `Err(RejectMessage)` from two calls deep.
    InterruptReject,
    /// Calls `msg.ack()`, then returns `Ok`.
    AckThenOk,
    /// Calls `msg.ack()`, then returns an error.
    AckThenErr,
    /// Calls `msg.nack()`, then returns `Ok`.
    NackThenOk,
    /// Calls `msg.nack()`, then returns an error.
    NackThenErr,
    /// Calls `msg.reject()`, then returns `Ok`.
    RejectThenOk,
    /// Record 0 is not valid JSON: the handler is never called for it.
    DecodeFailure,
}

/// What a case must end with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expected {
    /// Deliveries of record 0.
    pub deliveries: u32,
    /// The offset the group committed (`None`: nothing committed).
    pub committed: Option<i64>,
    /// The last effective settle of record 0 (`None`: never settled).
    pub last_settle: Option<Disposition>,
}

const ACK: Option<Disposition> = Some(Disposition::Ack);
const REJECT: Option<Disposition> = Some(Disposition::Reject);

/// The contract, as a table (`docs/acknowledgement.md`, "Policies" and "Interrupts and failures").
pub fn expected(policy: AckPolicy, behaviour: Behaviour) -> Expected {
    use AckPolicy::*;
    use Behaviour::*;
    let (deliveries, committed, last_settle) = match (policy, behaviour) {
        // At most once: acked before the handler; nothing the handler does changes that.
        (AckFirst, _) => (1, Some(2), ACK),
        // Failures: the policy decides.
        (Ack, ReturnsErr | Panics | DecodeFailure) => (1, Some(2), ACK),
        (RejectOnError, ReturnsErr | Panics | DecodeFailure) => (1, Some(2), REJECT),
        (NackOnError, ReturnsErr | Panics) => (2, Some(2), ACK),
        // Decode failures are nacked up to DEFAULT_DECODE_ATTEMPTS, then rejected.
        (NackOnError, DecodeFailure) => (ackstream::DEFAULT_DECODE_ATTEMPTS, Some(2), REJECT),
        // Manual: nobody settles record 0, so the commit stops before it.
        (Manual, ReturnsOk | ReturnsErr | Panics) => (1, None, None),
        // The handler never saw an undecodable record, so the framework rejects it.
        (Manual, DecodeFailure) => (1, Some(2), REJECT),
        (_, ReturnsOk) => (1, Some(2), ACK),
        // Interrupts and manual settles are honoured as named, and not settled again.
        (_, InterruptAck | AckThenOk | AckThenErr) => (1, Some(2), ACK),
        (_, InterruptNack | NackThenOk | NackThenErr) => (2, Some(2), ACK),
        (_, InterruptReject | RejectThenOk) => (1, Some(2), REJECT),
    };
    Expected {
        deliveries,
        committed,
        last_settle,
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Body {
    n: u32,
}

fn level_two(interrupt: HandlerError) -> Result<(), HandlerError> {
    Err(interrupt)
}

fn level_one(interrupt: HandlerError) -> Result<(), HandlerError> {
    level_two(interrupt)?;
    unreachable!("the interrupt propagates")
}

async fn behave(
    behaviour: Behaviour,
    policy: AckPolicy,
    body: Body,
    msg: KafkaMessage,
) -> Result<(), HandlerError> {
    if body.n != 0 || msg.attempt() > 1 {
        if policy == AckPolicy::Manual {
            msg.ack().await?;
        }
        return Ok(());
    }
    match behaviour {
        Behaviour::ReturnsOk => Ok(()),
        Behaviour::ReturnsErr => Err("handler error".into()),
        Behaviour::Panics => panic!("handler panic"),
        Behaviour::InterruptAck => level_one(AckMessage.into()),
        Behaviour::InterruptNack => level_one(NackMessage.into()),
        Behaviour::InterruptReject => level_one(RejectMessage.into()),
        Behaviour::AckThenOk => {
            msg.ack().await?;
            Ok(())
        }
        Behaviour::AckThenErr => {
            msg.ack().await?;
            Err("error after ack".into())
        }
        Behaviour::NackThenOk => {
            msg.nack().await?;
            Ok(())
        }
        Behaviour::NackThenErr => {
            msg.nack().await?;
            Err("error after nack".into())
        }
        Behaviour::RejectThenOk => {
            msg.reject().await?;
            Ok(())
        }
        Behaviour::DecodeFailure => panic!("an undecodable record reached the handler"),
    }
}

/// Runs one policy case against a fixture and checks it against [`expected`].
pub async fn run<F: Fixture>(fixture: &F, policy: AckPolicy, behaviour: Behaviour) {
    let broker = fixture.connect();
    let topic = unique("policy");
    let group = unique("group");
    fixture.create_topic(&topic, 1).await;
    let first: Vec<u8> = if behaviour == Behaviour::DecodeFailure {
        b"{not json".to_vec()
    } else {
        serde_json::to_vec(&Body { n: 0 }).unwrap()
    };
    broker.publish(&topic, first).partition(0).await.unwrap();
    broker
        .publish_json(&topic, &Body { n: 1 })
        .unwrap()
        .partition(0)
        .await
        .unwrap();

    let recorder = Recorder::attach(&broker);
    fixture
        .subscriber(&broker, &topic)
        .group_id(&group)
        .auto_offset_reset(OffsetReset::Earliest)
        .ack_policy(policy)
        .handle(move |Json(body): Json<Body>, msg: KafkaMessage| {
            behave(behaviour, policy, body, msg)
        });
    let app = App::new(broker.clone()).spawn();
    let tp = TopicPartition::new(topic.as_str(), 0);
    recorder
        .wait_for("record 1 to be settled", |r| r.is_settled(&tp, 1))
        .await;
    app.shutdown().await.expect("clean shutdown");

    let want = expected(policy, behaviour);
    let got = Expected {
        deliveries: recorder.deliveries(&tp, 0),
        committed: fixture.committed(&group, &topic, 0).await,
        last_settle: recorder.settles(&tp, 0).last().copied(),
    };
    assert_eq!(
        got,
        want,
        "{} broker, {policy:?}, {behaviour:?}: settles of record 0: {:?}",
        fixture.name(),
        recorder.settles(&tp, 0)
    );
    let stored = recorder.stored(&tp);
    assert!(
        stored.windows(2).all(|w| w[0] < w[1]),
        "stored offsets must only move forward (one commit per offset): {stored:?}"
    );
    if want.committed.is_none() {
        assert!(
            recorder.held_back(&tp, 0),
            "an unsettled record holding back the commit is reported"
        );
    }
}
