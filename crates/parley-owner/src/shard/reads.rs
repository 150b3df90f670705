//! What any owner answers from the store the owners share: history, restrictions in force and
//! the event logs. Nothing of the shard's own state, so nothing waits behind them.

use super::Respond;
use super::Resumed;
use super::Shard;
use crate::ops;
use crate::owner::history_cutoff;
use crate::owner::storage_error;
use parley_core::time::unix_ms;

impl Shard {
    pub(super) fn query_history(
        &mut self,
        read: ops::QueryHistory,
        reply: Respond<ops::QueryHistory>,
    ) {
        let ops::QueryHistory {
            app,
            conversation,
            mut query,
        } = read;
        query.start_ms = query.start_ms.max(history_cutoff(&self.limits(&app)));
        let store = self.store.clone();
        self.wait(None, async move {
            let found = store.query(&app, &conversation, query).await;
            reply.send(found.map_err(storage_error));
            Resumed::Done
        });
    }

    pub(super) fn count_history(
        &mut self,
        read: ops::CountHistory,
        reply: Respond<ops::CountHistory>,
    ) {
        let start_ms = read.start_ms.max(history_cutoff(&self.limits(&read.app)));
        let store = self.store.clone();
        self.wait(None, async move {
            let counted = store
                .count(&read.app, &read.conversation, start_ms, read.end_ms)
                .await;
            reply.send(counted.map_err(storage_error));
            Resumed::Done
        });
    }

    pub(super) fn restrictions(
        &mut self,
        read: ops::Restrictions,
        reply: Respond<ops::Restrictions>,
    ) {
        let store = self.store.clone();
        self.wait(None, async move {
            let found = store.restrictions(&read.app, &read.scope, unix_ms()).await;
            reply.send(found.map_err(storage_error));
            Resumed::Done
        });
    }

    pub(super) fn events(&mut self, read: ops::Events, reply: Respond<ops::Events>) {
        let store = self.store.clone();
        self.wait(None, async move {
            let found = store
                .events(&read.app, read.stream, read.after, read.limit)
                .await;
            reply.send(found.map_err(storage_error));
            Resumed::Done
        });
    }
}
