use ackstream::prelude::*;
use ackstream::memory::MemoryBroker;

struct NotAnExtractor;

async fn handler(_x: NotAnExtractor, _body: String) {}

fn main() {
    let broker = MemoryBroker::new();
    broker.subscriber("t").handle(handler);
}
