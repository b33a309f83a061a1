//! The encrypted overlay network (WireGuard mesh, bridges, VIPs, DNS). Built in a later issue; nothing here yet.
