//! Scroll-back: the page of a room's kept messages that a `history` command asks for.
//!
//! Answered from the room's log under its lock, like a `joined`'s replay: the page holds the
//! stored entry frames themselves (a reference-count bump each), which
//! [`crate::protocol::event::history`] splices into the answer without re-encoding them.

use crate::chat::room::log::Page;
use crate::chat::room::Room;
use crate::ws::Frame;

/// A page of kept messages, as [`Room::history_page`] found it.
#[derive(Debug, Clone)]
pub struct HistoryPage {
    /// The stored `,{message}` entries, oldest first (clones of the kept frames: shared
    /// bytes, no copy).
    pub entries: Vec<Frame>,
    /// Older messages are kept than the first entry.
    pub has_more: bool,
    /// Every requested seq was in memory, or memory reaches down to the room's first message.
    /// Memory is all there is for [`crate::chat::backend::Backend::Memory`]; a backend that
    /// keeps more reads the rest itself when this is false.
    pub complete: bool,
    /// Memory holds the room from its first message on: nothing older exists anywhere.
    pub whole: bool,
}

impl HistoryPage {
    /// A page from what a backend stores beyond memory (Redis, the disk): `newest_first`
    /// holds the event JSON of up to `limit + 1` messages below the page's `before`, newest
    /// first (the one past `limit` only says that older ones exist). The same byte bound as
    /// a page from memory: at least one message, at most `max_bytes`.
    pub fn from_stored<'a>(
        newest_first: impl Iterator<Item = &'a [u8]>,
        limit: usize,
        max_bytes: usize,
    ) -> Self {
        let mut entries = Vec::with_capacity(limit.min(64));
        let mut has_more = false;
        let mut bytes = 0;
        for (n, json) in newest_first.enumerate() {
            if n == limit {
                has_more = true;
                break;
            }
            let entry = crate::protocol::event::history_entry(json);
            if !entries.is_empty() && bytes + entry.len() > max_bytes {
                has_more = true;
                break;
            }
            bytes += entry.len();
            entries.push(entry);
        }
        entries.reverse();
        Self {
            entries,
            has_more,
            complete: true,
            whole: false,
        }
    }
}

impl Room {
    /// The kept messages that answer `page`: at most `limit`, and no more bytes than one
    /// `joined` may carry (`--joined-history-bytes`), so a page cannot trip the slow-consumer
    /// cap; a page cut short says `has_more` and the client asks again from its oldest.
    pub fn history_page(&self, page: Page) -> HistoryPage {
        let state = self.lock();
        let history = state.log.history();
        let range = state.log.page(page, history.limits().joined_bytes);
        HistoryPage {
            entries: history.entries().range(range.range).cloned().collect(),
            has_more: range.has_more,
            complete: range.complete,
            whole: range.whole,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::hub::Hub;
    use crate::config::Config;
    use crate::protocol::event::entry_json;

    #[test]
    fn a_page_shares_the_kept_frames() {
        let hub = Hub::new(&Config::default());
        let room = Room::new("r".into(), "e".into(), hub.history_budget().clone());
        let peer = std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 9));
        let conn = hub.register(peer);
        for text in ["one", "two", "three"] {
            room.publish(&hub, &conn, "alice", text);
        }
        let page = room.history_page(Page {
            before: Some(3),
            limit: 50,
        });
        assert_eq!(
            (page.entries.len(), page.has_more, page.complete),
            (2, false, true)
        );
        let kept = room.history_entries();
        assert_eq!(
            page.entries[0].bytes().as_ptr(),
            kept[0].bytes().as_ptr(),
            "the same bytes, not a copy"
        );
        let first: serde_json::Value =
            serde_json::from_slice(entry_json(&page.entries[0])).expect("JSON");
        assert_eq!(
            (first["seq"].as_u64(), first["text"].as_str()),
            (Some(1), Some("one"))
        );
    }
}
