//! What any owner answers from the store the owners share: history, restrictions in force and
//! the event logs. Nothing of the shard's own state, so nothing waits behind them.

use super::Respond;
use super::Shard;
use super::effects::StoreWork;
use crate::history_cutoff;
use crate::ops;

impl Shard {
    pub(super) fn query_history(
        &mut self,
        mut read: ops::QueryHistory,
        reply: Respond<ops::QueryHistory>,
    ) {
        let cutoff = history_cutoff(&self.limits(&read.app), self.now.unix_ms);
        read.query.start_ms = read.query.start_ms.max(cutoff);
        self.wait(None, StoreWork::QueryHistory { read, reply });
    }

    pub(super) fn count_history(
        &mut self,
        mut read: ops::CountHistory,
        reply: Respond<ops::CountHistory>,
    ) {
        let cutoff = history_cutoff(&self.limits(&read.app), self.now.unix_ms);
        read.start_ms = read.start_ms.max(cutoff);
        self.wait(None, StoreWork::CountHistory { read, reply });
    }

    pub(super) fn restrictions(
        &mut self,
        read: ops::Restrictions,
        reply: Respond<ops::Restrictions>,
    ) {
        let now_ms = self.now.unix_ms;
        self.wait(
            None,
            StoreWork::Restrictions {
                read,
                now_ms,
                reply,
            },
        );
    }

    pub(super) fn events(&mut self, read: ops::Events, reply: Respond<ops::Events>) {
        self.wait(None, StoreWork::Events { read, reply });
    }
}
