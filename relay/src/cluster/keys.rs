//! Redis key and channel names, all under the `--cluster-name` prefix.
//!
//! A room's keys share the hash tag `{<cluster>:<room>}` so they live in one Redis Cluster
//! slot and one script may touch them all.

/// The names of one room's keys, in the order the scripts take them.
#[derive(Debug, Clone)]
pub struct RoomKeys {
    pub epoch: String,
    pub seq: String,
    pub stream: String,
    pub members: String,
    /// Sends remembered by `ref`: a hash `person\nref -> seq|id`, and a sorted set of the
    /// same fields by time, for expiry after `--dedupe-window`.
    pub refs: String,
    pub refs_by_time: String,
    /// Messages as they are after an edit or delete: `seq -> event JSON`, applied over the
    /// stream's entries (which stay as first sent) when a page is read.
    pub revised: String,
    /// Read positions: a hash of person to seq.
    pub reads: String,
    /// Per person, how many member fields it has (see `scripts::USERS`).
    pub people: String,
    pub channel: String,
}

#[derive(Debug, Clone)]
pub struct Keys {
    cluster: String,
    channel_prefix: String,
}

impl Keys {
    pub fn new(cluster: &str) -> Self {
        Self {
            cluster: cluster.to_owned(),
            channel_prefix: format!("{cluster}:room:"),
        }
    }

    pub fn room(&self, room: &str) -> RoomKeys {
        let tag = format!("{{{}:{room}}}", self.cluster);
        RoomKeys {
            epoch: format!("{tag}:epoch"),
            seq: format!("{tag}:seq"),
            stream: format!("{tag}:history"),
            members: format!("{tag}:members"),
            refs: format!("{tag}:refs"),
            refs_by_time: format!("{tag}:refs-by-time"),
            revised: format!("{tag}:revised"),
            reads: format!("{tag}:reads"),
            people: format!("{tag}:people"),
            channel: format!("{}{room}", self.channel_prefix),
        }
    }

    /// The room a channel belongs to, if it is a room channel of this cluster.
    pub fn room_of<'a>(&self, channel: &'a str) -> Option<&'a str> {
        channel.strip_prefix(&self.channel_prefix)
    }

    /// A node's liveness key: present while the node is alive (refreshed with a TTL).
    pub fn node_prefix(&self) -> String {
        format!("{}:node:", self.cluster)
    }

    /// The channel a node sends its readiness probes to itself on.
    pub fn probe_channel(&self, node: &str) -> String {
        format!("{}:probe:{node}", self.cluster)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_prefixed_and_rooms_round_trip() {
        let keys = Keys::new("app1");
        let room = keys.room("gen:eral");
        assert_eq!(room.epoch, "{app1:gen:eral}:epoch");
        assert_eq!(room.channel, "app1:room:gen:eral");
        assert_eq!(keys.room_of(&room.channel), Some("gen:eral"));
        assert_eq!(keys.room_of("app2:room:x"), None);
        assert_eq!(keys.probe_channel("ab"), "app1:probe:ab");
    }
}
