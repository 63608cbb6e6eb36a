//! Socket options shared by the runtime bindings: what the implicit release
//! policy needs from their TCP sockets. The data lives in the core (one copy
//! for every adapter); each binding pins and reads back with its runtime's
//! own socket types.

pub use ft_session_core::{SocketOptions, DEFAULT_IMPLICIT_SOCKET_BUFFER};
