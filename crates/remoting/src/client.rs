//! Async TCP client. (Contract; implementation pending.)
