//! Scroll-back in cluster mode: a page of the room's Redis stream (entry ids `<seq>-1`, see
//! [`super::scripts`]), read in the batch's pipeline and answered to the one connection.
//!
//! When Redis cannot answer (the batch failed, or the node is degraded) the page comes from
//! the node's own copy of the room's tail, as joins are then served from the node's own
//! state: the client gets an answer, never an error it could not act on.

use std::sync::Arc;

use redis::Value;
use tracing::warn;

use super::reply::{evalsha, stream_entries};
use super::task::Task;
use crate::chat::backend::{send_page, Page};
use crate::chat::client::Conn;
use crate::chat::room::{HistoryPage, Room};

impl Task {
    /// `XREVRANGE` of the room's stream below `page.before` (through the page script, which
    /// shows edited and deleted messages as they are now): one entry more than the page,
    /// which says whether older ones exist.
    pub(super) fn history_read(&self, room: &Room, page: Page) -> redis::Cmd {
        let keys = self.bp.settings.keys.room(&room.name);
        // `before` is at least 1 (the session checked it): `0-1` is below every entry.
        let end = page
            .before
            .map_or_else(|| "+".to_owned(), |before| format!("{}-1", before - 1));
        let mut cmd = evalsha(&self.scripts.page, &[&keys.stream, &keys.revised]);
        cmd.arg(end).arg(page.limit + 1);
        cmd
    }

    /// Answers a page from the stream's reply (newest first).
    pub(super) fn history_answer(
        &self,
        conn: &Arc<Conn>,
        room: &Arc<Room>,
        page: Page,
        reply: &Value,
    ) {
        if !matches!(reply, Value::Array(_)) {
            warn!(room = %room.name, "unexpected reply to a history read; answering from this node");
            return self.history_local(conn, room, page);
        }
        let entries = stream_entries(reply);
        let answer = HistoryPage::from_stored(
            entries.iter().map(|(_, json)| json.as_ref()),
            page.limit,
            self.hub.history_budget().limits.joined_bytes,
        );
        send_page(&self.hub, conn, &room.name, &answer);
    }

    /// Answers a page from the room's tail on this node (Redis unreachable).
    pub(super) fn history_local(&self, conn: &Arc<Conn>, room: &Arc<Room>, page: Page) {
        send_page(&self.hub, conn, &room.name, &room.history_page(page));
    }
}
