//! Who is asking: the caller as the kernel reports it (the uid that owns a loopback
//! client's socket, or a Unix socket peer's credentials), and the lists of users and
//! groups (`callers` on a rule, `approvals.approvers`) that admit some callers only.

use serde::{Deserialize, Serialize};

/// The listener a request came in on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    #[default]
    Tcp,
    Unix,
}

/// The caller of a request. `uid` is `None` when the kernel could not say (a peer that
/// is not on this machine, a socket already gone); such a caller is in no list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caller {
    pub via: Via,
    pub uid: Option<u32>,
    pub user: Option<String>,
    /// The user's primary group, for group lists; not shown.
    #[serde(skip)]
    pub gid: Option<u32>,
}

impl Caller {
    /// `tcp:alice(1000)`, `unix:uid 65534`, `tcp:unknown`: for the audit log.
    pub fn audit(&self) -> String {
        let via = match self.via {
            Via::Tcp => "tcp",
            Via::Unix => "unix",
        };
        match (&self.user, self.uid) {
            (Some(user), Some(uid)) => format!("{via}:{user}({uid})"),
            _ => format!("{via}:{}", self.describe()),
        }
    }

    /// The user name, else `uid N`, else `unknown`: for notifications.
    pub fn describe(&self) -> String {
        match (&self.user, self.uid) {
            (Some(user), _) => user.clone(),
            (None, Some(uid)) => format!("uid {uid}"),
            (None, None) => "unknown".into(),
        }
    }
}

/// Users and groups, resolved when the config is loaded: a group admits the users whose
/// primary group it is and the members `/etc/group` lists for it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Who {
    pub uids: Vec<u32>,
    pub gids: Vec<u32>,
    pub members: Vec<String>,
    /// As the config wrote them (`alice`, `@ha`), for `explain` and `check`.
    pub shown: Vec<String>,
}

impl Who {
    pub fn allows(&self, caller: &Caller) -> bool {
        let Some(uid) = caller.uid else {
            return false;
        };
        self.uids.contains(&uid)
            || caller.gid.is_some_and(|gid| self.gids.contains(&gid))
            || caller
                .user
                .as_ref()
                .is_some_and(|name| self.members.contains(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(uid: Option<u32>, user: Option<&str>, gid: Option<u32>) -> Caller {
        Caller {
            via: Via::Tcp,
            uid,
            user: user.map(str::to_string),
            gid,
        }
    }

    #[test]
    fn users_groups_and_members() {
        let who = Who {
            uids: vec![1000],
            gids: vec![50],
            members: vec!["bob".into()],
            shown: vec![],
        };
        assert!(who.allows(&caller(Some(1000), None, None)));
        assert!(who.allows(&caller(Some(7), Some("x"), Some(50))));
        assert!(who.allows(&caller(Some(8), Some("bob"), Some(8))));
        assert!(!who.allows(&caller(Some(65534), Some("nobody"), Some(65534))));
        // A caller the kernel could not name is in no list, whatever else it claims.
        assert!(!who.allows(&caller(None, Some("bob"), Some(50))));
    }

    #[test]
    fn described_for_people() {
        assert_eq!(caller(Some(0), Some("root"), None).describe(), "root");
        assert_eq!(caller(Some(42), None, None).describe(), "uid 42");
        assert_eq!(caller(None, None, None).describe(), "unknown");
        assert_eq!(caller(Some(0), Some("root"), None).audit(), "tcp:root(0)");
        assert_eq!(caller(Some(42), None, None).audit(), "tcp:uid 42");
        let json = serde_json::to_value(caller(Some(65534), None, Some(1))).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"via":"tcp","uid":65534,"user":null})
        );
    }
}
