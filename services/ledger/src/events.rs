//! WatchEvents: the outbox streamed in commit order from a cursor. (Being written.)
