//! Async TCP server: accept, decode frames, dispatch by request code, reply with the request's
//! opaque. (Contract; implementation pending.)
