//! Open WebSockets per client address: each address (an IPv6 client by its /64, see
//! [`crate::rate_limit::address_key`]) may hold a few, and the API as a whole a bounded number,
//! so one source cannot hold thousands of sockets and their event queues. The table holds only
//! addresses with an open socket, so it is bounded by [`MAX_OPEN`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use crate::rate_limit::address_key;

/// Open WebSockets in all, whatever their addresses: at the default queue of 1,024 events of a
/// few hundred bytes each, 10,000 clients bound the queues to a few GiB at worst, and a security
/// team's dashboards are far fewer.
pub const MAX_OPEN: usize = 10_000;

/// Why a connection got no slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoSlot {
    AddressFull,
    ApiFull,
}

pub struct ConnectionSlots {
    per_address: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// Held while a connection is open; its drop frees the slot.
pub struct Slot {
    slots: Arc<ConnectionSlots>,
    key: IpAddr,
}

impl ConnectionSlots {
    pub fn new(per_address: usize) -> Arc<Self> {
        Arc::new(ConnectionSlots {
            per_address: per_address.max(1),
            open: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for a connection from `client`, unless its address or the API is full (counted).
    pub fn take(self: &Arc<Self>, client: IpAddr) -> Result<Slot, NoSlot> {
        let key = address_key(client);
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let total: usize = open.values().sum();
        let held = open.get(&key).copied().unwrap_or(0);
        let refusal = if held >= self.per_address {
            Some(NoSlot::AddressFull)
        } else if total >= MAX_OPEN {
            Some(NoSlot::ApiFull)
        } else {
            None
        };
        if let Some(refusal) = refusal {
            telemetry::counter(
                "vncguard_api_ws_refused_total",
                "WebSocket connections refused for want of a slot",
                &[(
                    "reason",
                    match refusal {
                        NoSlot::AddressFull => "address_full",
                        NoSlot::ApiFull => "api_full",
                    },
                )],
            )
            .inc();
            return Err(refusal);
        }
        *open.entry(key).or_insert(0) += 1;
        Ok(Slot {
            slots: self.clone(),
            key,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(held) = open.get_mut(&self.key) {
            *held -= 1;
            if *held == 0 {
                open.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_gets_its_slots_and_no_more_until_one_frees() {
        let slots = ConnectionSlots::new(2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let first = slots.take(a).unwrap();
        let _second = slots.take(a).unwrap();
        assert_eq!(slots.take(a).err(), Some(NoSlot::AddressFull));
        assert!(slots.take("192.0.2.2".parse().unwrap()).is_ok());
        drop(first);
        assert!(slots.take(a).is_ok());
    }

    #[test]
    fn an_ipv6_client_is_counted_by_its_64_and_a_mapped_address_as_ipv4() {
        let slots = ConnectionSlots::new(1);
        let _one = slots.take("2001:db8:1:2::1".parse().unwrap()).unwrap();
        assert_eq!(
            slots.take("2001:db8:1:2:ffff::9".parse().unwrap()).err(),
            Some(NoSlot::AddressFull)
        );
        assert!(slots.take("2001:db8:1:3::1".parse().unwrap()).is_ok());
        let _v4 = slots.take("198.51.100.7".parse().unwrap()).unwrap();
        assert_eq!(
            slots.take("::ffff:198.51.100.7".parse().unwrap()).err(),
            Some(NoSlot::AddressFull)
        );
    }

    #[test]
    fn the_table_forgets_addresses_with_no_open_socket() {
        let slots = ConnectionSlots::new(4);
        for i in 0..100u8 {
            drop(slots.take(IpAddr::from([10, 0, 0, i])).unwrap());
        }
        assert!(slots.open.lock().unwrap().is_empty());
    }
}
