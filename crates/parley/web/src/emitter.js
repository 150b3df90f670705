// A small typed event emitter: the `on` / `once` / `off` of the Agora RTM Web SDK's objects.
export class EventEmitter {
    constructor() {
        this.handlers = new Map();
    }
    /** Calls `listener` every time `event` happens. */
    on(event, listener) {
        let set = this.handlers.get(event);
        if (!set) {
            set = new Set();
            this.handlers.set(event, set);
        }
        set.add(listener);
        return this;
    }
    /** Calls `listener` the next time `event` happens, once. */
    once(event, listener) {
        const once = ((...args) => {
            this.off(event, once);
            listener(...args);
        });
        return this.on(event, once);
    }
    off(event, listener) {
        this.handlers.get(event)?.delete(listener);
        return this;
    }
    removeAllListeners(event) {
        if (event === undefined) {
            this.handlers.clear();
        }
        else {
            this.handlers.delete(event);
        }
        return this;
    }
    /** Calls the listeners of `event`; one that throws does not stop the others. */
    emit(event, ...args) {
        for (const listener of [...(this.handlers.get(event) ?? [])]) {
            try {
                listener(...args);
            }
            catch (error) {
                console.error(`a ${String(event)} listener threw`, error);
            }
        }
    }
}
