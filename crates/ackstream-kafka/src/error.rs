//! Kafka client errors as [`BackendError`]s, with the kind a caller acts on (retry later, fix
//! the request, or stop).

use ackstream_core::{BackendError, BackendErrorKind};
use rdkafka::error::{KafkaError, RDKafkaErrorCode as Code};

/// `error` as a backend error saying `what` failed, classified by its librdkafka error code.
pub(crate) fn kafka_error(what: impl Into<String>, error: KafkaError) -> BackendError {
    let kind = error
        .rdkafka_error_code()
        .map_or(BackendErrorKind::Other, kind_of);
    BackendError::with_source(what, error).with_kind(kind)
}

/// What a librdkafka error code means for the caller.
pub(crate) fn kind_of(code: Code) -> BackendErrorKind {
    match code {
        Code::BrokerTransportFailure
        | Code::AllBrokersDown
        | Code::MessageTimedOut
        | Code::OperationTimedOut
        | Code::RequestTimedOut
        | Code::TimedOutQueue
        | Code::QueueFull
        | Code::WaitingForCoordinator
        | Code::LeaderNotAvailable
        | Code::NotLeaderForPartition
        | Code::PreferredLeaderNotAvailable
        | Code::EligibleLeadersNotAvailable
        | Code::BrokerNotAvailable
        | Code::NetworkException
        | Code::CoordinatorLoadInProgress
        | Code::CoordinatorNotAvailable
        | Code::NotCoordinator
        | Code::NotEnoughReplicas
        | Code::NotEnoughReplicasAfterAppend
        | Code::RebalanceInProgress
        | Code::ThrottlingQuotaExceeded
        | Code::UnknownLeaderEpoch
        | Code::FencedLeaderEpoch
        | Code::Retry => BackendErrorKind::Retriable,
        Code::InvalidMessage
        | Code::InvalidMessageSize
        | Code::MessageSizeTooLarge
        | Code::InvalidTopic
        | Code::UnknownTopic
        | Code::UnknownPartition
        | Code::UnknownTopicOrPartition
        | Code::UnknownTopicId
        | Code::InvalidPartitions => BackendErrorKind::Invalid,
        Code::Fatal
        | Code::Fenced
        | Code::FencedInstanceId
        | Code::FencedMemberEpoch
        | Code::ProducerFenced
        | Code::TransactionCoordinatorFenced
        | Code::Authentication
        | Code::SaslAuthenticationFailed
        | Code::TopicAuthorizationFailed
        | Code::GroupAuthorizationFailed
        | Code::ClusterAuthorizationFailed
        | Code::TransactionalIdAuthorizationFailed
        | Code::DelegationTokenAuthorizationFailed => BackendErrorKind::Fatal,
        _ => BackendErrorKind::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broker_outage_is_retriable_a_too_large_record_is_not_a_fenced_client_is_fatal() {
        let outage = kafka_error(
            "publish",
            KafkaError::MessageProduction(Code::AllBrokersDown),
        );
        assert!(outage.is_retriable());
        let large = kafka_error(
            "publish",
            KafkaError::MessageProduction(Code::MessageSizeTooLarge),
        );
        assert_eq!(large.kind(), BackendErrorKind::Invalid);
        let fenced = kafka_error(
            "poll",
            KafkaError::MessageConsumption(Code::FencedInstanceId),
        );
        assert_eq!(fenced.kind(), BackendErrorKind::Fatal);
        assert!(!fenced.is_retriable());
    }
}
