//! One assigned partition of the in-memory broker, read from a position.

use std::collections::VecDeque;
use std::sync::Arc;

use ackstream_core::backend::PartitionFeed;
use ackstream_core::{BackendError, Record, TopicPartition};
use tokio::sync::watch;

use super::log::PartitionLog;

/// Records fetched per lock of a partition log.
const FETCH_MAX: usize = 256;

/// One assigned partition of the in-memory broker, read from a position.
#[derive(Debug)]
pub struct MemoryFeed {
    log: Arc<PartitionLog>,
    position: i64,
    buffer: VecDeque<Record>,
    end: watch::Receiver<i64>,
    group: Option<Arc<str>>,
    /// Attempt counts the partition's previous owner handed over.
    carried: Vec<(i64, u32)>,
}

impl MemoryFeed {
    pub(super) fn new(log: Arc<PartitionLog>, from: i64, group: Option<Arc<str>>) -> Self {
        Self {
            end: log.watch_end(),
            log,
            position: from,
            buffer: VecDeque::new(),
            group,
            carried: Vec::new(),
        }
    }

    pub(super) fn with_carried(mut self, carried: Vec<(i64, u32)>) -> Self {
        self.carried = carried;
        self
    }

    pub(super) fn tp(&self) -> &TopicPartition {
        &self.log.tp
    }

    fn return_buffer(&mut self) {
        if !self.buffer.is_empty() {
            self.log
                .unfetch(self.buffer.drain(..).map(|r| r.offset), &self.group);
        }
    }
}

impl Drop for MemoryFeed {
    fn drop(&mut self) {
        self.return_buffer();
    }
}

impl PartitionFeed for MemoryFeed {
    fn topic_partition(&self) -> &TopicPartition {
        &self.log.tp
    }

    async fn next(&mut self) -> Option<Record> {
        loop {
            if let Some(r) = self.buffer.pop_front() {
                return Some(r);
            }
            let end = *self.end.borrow_and_update();
            if self.position < end {
                self.position =
                    self.log
                        .fetch(self.position, FETCH_MAX, &self.group, &mut self.buffer);
                continue;
            }
            if self.end.changed().await.is_err() {
                return None;
            }
        }
    }

    fn seek(&mut self, offset: i64) -> Result<(), BackendError> {
        if offset < 0 {
            return Err(BackendError::new(format!(
                "{}: cannot seek to negative offset {offset}",
                self.log.tp
            )));
        }
        self.return_buffer();
        self.position = offset;
        Ok(())
    }

    fn carried_attempts(&self) -> Vec<(i64, u32)> {
        self.carried.clone()
    }
}
