//! Acknowledgement policies: when the framework settles a record on the handler's behalf.

/// When the framework settles a record. FastStream's five policies, with Kafka meanings.
///
/// | policy | FastStream spelling | when the framework settles |
/// | --- | --- | --- |
/// | `AckFirst` (default) | `auto_commit=True`, `ACK_FIRST` | ack before the handler runs: at most once |
/// | `Ack` | `ACK` | ack after the handler, whether it succeeded or failed |
/// | `RejectOnError` | `REJECT_ON_ERROR` | ack on success, reject on error |
/// | `NackOnError` | `auto_commit=False`, `NACK_ON_ERROR` | ack on success, nack on error: at least once |
/// | `Manual` | `no_ack=True`, `MANUAL` | never: the handler settles each record itself |
///
/// After the handler the framework settles only a record that is still unsettled, and an
/// interrupt (`Err(NackMessage.into())`, …) settles as named under every policy but `AckFirst`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum AckPolicy {
    /// Ack before the handler runs (at most once). Works without a consumer group.
    #[default]
    AckFirst,
    /// Ack after the handler returns, success or failure.
    Ack,
    /// Ack on success, reject on failure.
    RejectOnError,
    /// Ack on success, nack (redeliver) on failure: at least once.
    NackOnError,
    /// The handler settles every record itself; an unsettled record holds its partition's commit back.
    Manual,
}

impl AckPolicy {
    /// Whether the policy commits offsets, and so needs a consumer group.
    pub fn needs_group(self) -> bool {
        self != AckPolicy::AckFirst
    }

    /// The policy's `snake_case` name, as used on command lines (`nack_on_error`).
    pub fn name(self) -> &'static str {
        match self {
            AckPolicy::AckFirst => "ack_first",
            AckPolicy::Ack => "ack",
            AckPolicy::RejectOnError => "reject_on_error",
            AckPolicy::NackOnError => "nack_on_error",
            AckPolicy::Manual => "manual",
        }
    }

    /// All five policies, in the table's order.
    pub const ALL: [AckPolicy; 5] = [
        AckPolicy::AckFirst,
        AckPolicy::Ack,
        AckPolicy::RejectOnError,
        AckPolicy::NackOnError,
        AckPolicy::Manual,
    ];
}

impl std::str::FromStr for AckPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AckPolicy::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| format!("unknown ack policy {s:?}; expected one of ack_first, ack, reject_on_error, nack_on_error, manual"))
    }
}
