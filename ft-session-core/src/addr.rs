//! Where a client dials, kept in a form every adapter can resolve again on
//! each reconnect attempt (a server that moved to another address behind
//! the same name is found again). Plain data: resolving is the adapters' job.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::io;

/// A server address as given by the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerAddr {
    /// Literal addresses, tried in order on every attempt.
    Addrs(Vec<SocketAddr>),
    /// A host name and port, resolved anew on every attempt; the addresses
    /// it resolves to are tried in order.
    Host {
        /// The name (or an address literal the resolver accepts).
        host: String,
        /// The port.
        port: u16,
    },
}

/// What `FtStream::connect` accepts in every adapter: the shapes of
/// the standard `ToSocketAddrs` (`"host:port"`, `(host, port)`, socket
/// addresses), turned into a [`ServerAddr`] without resolving yet.
pub trait ToServerAddr {
    /// The address to resolve on each connect attempt; `InvalidInput` if a
    /// string is not `host:port`.
    fn to_server_addr(&self) -> io::Result<ServerAddr>;
}

impl ToServerAddr for ServerAddr {
    fn to_server_addr(&self) -> io::Result<ServerAddr> {
        Ok(self.clone())
    }
}

impl ToServerAddr for SocketAddr {
    fn to_server_addr(&self) -> io::Result<ServerAddr> {
        Ok(ServerAddr::Addrs(vec![*self]))
    }
}

impl ToServerAddr for SocketAddrV4 {
    fn to_server_addr(&self) -> io::Result<ServerAddr> {
        SocketAddr::V4(*self).to_server_addr()
    }
}

impl ToServerAddr for SocketAddrV6 {
    fn to_server_addr(&self) -> io::Result<ServerAddr> {
        SocketAddr::V6(*self).to_server_addr()
    }
}

impl ToServerAddr for (IpAddr, u16) {
    fn to_server_addr(&self) -> io::Result<ServerAddr> {
        SocketAddr::new(self.0, self.1).to_server_addr()
    }
}

impl ToServerAddr for (Ipv4Addr, u16) {
    fn to_server_addr(&self) -> io::Result<ServerAddr> {
        SocketAddr::new(self.0.into(), self.1).to_server_addr()
    }
}

impl ToServerAddr for (Ipv6Addr, u16) {
    fn to_server_addr(&self) -> io::Result<ServerAddr> {
        SocketAddr::new(self.0.into(), self.1).to_server_addr()
    }
}

impl ToServerAddr for [SocketAddr] {
    fn to_server_addr(&self) -> io::Result<ServerAddr> {
        Ok(ServerAddr::Addrs(self.to_vec()))
    }
}

impl ToServerAddr for Vec<SocketAddr> {
    fn to_server_addr(&self) -> io::Result<ServerAddr> {
        self.as_slice().to_server_addr()
    }
}

impl ToServerAddr for (&str, u16) {
    fn to_server_addr(&self) -> io::Result<ServerAddr> {
        if let Ok(ip) = self.0.parse::<IpAddr>() {
            return (ip, self.1).to_server_addr();
        }
        Ok(ServerAddr::Host {
            host: self.0.to_owned(),
            port: self.1,
        })
    }
}

impl ToServerAddr for (String, u16) {
    fn to_server_addr(&self) -> io::Result<ServerAddr> {
        (self.0.as_str(), self.1).to_server_addr()
    }
}

impl ToServerAddr for str {
    fn to_server_addr(&self) -> io::Result<ServerAddr> {
        if let Ok(addr) = self.parse::<SocketAddr>() {
            return addr.to_server_addr();
        }
        let invalid = || {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "invalid address: not host:port",
            )
        };
        let (host, port) = self.rsplit_once(':').ok_or_else(invalid)?;
        let port = port.parse::<u16>().map_err(|_| invalid())?;
        (host, port).to_server_addr()
    }
}

impl ToServerAddr for String {
    fn to_server_addr(&self) -> io::Result<ServerAddr> {
        self.as_str().to_server_addr()
    }
}

impl<T: ToServerAddr + ?Sized> ToServerAddr for &T {
    fn to_server_addr(&self) -> io::Result<ServerAddr> {
        (**self).to_server_addr()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn shapes() {
        let a: SocketAddr = "127.0.0.1:80".parse().unwrap();
        assert_eq!(a.to_server_addr().unwrap(), ServerAddr::Addrs(vec![a]));
        assert_eq!(
            "127.0.0.1:80".to_server_addr().unwrap(),
            ServerAddr::Addrs(vec![a])
        );
        assert_eq!(
            ("127.0.0.1", 80).to_server_addr().unwrap(),
            ServerAddr::Addrs(vec![a])
        );
        let host = ServerAddr::Host {
            host: "localhost".into(),
            port: 80,
        };
        assert_eq!("localhost:80".to_server_addr().unwrap(), host);
        assert_eq!(String::from("localhost:80").to_server_addr().unwrap(), host);
        assert_eq!(
            ("localhost".to_string(), 80).to_server_addr().unwrap(),
            host
        );
        assert!("localhost".to_server_addr().is_err());
        assert!("localhost:http".to_server_addr().is_err());
    }
}
