use ackstream::extract::FromMessage;

struct NotAnExtractor;

fn require_extractor<T: FromMessage>() {}

fn main() {
    require_extractor::<NotAnExtractor>();
}
