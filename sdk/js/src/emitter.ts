// A small typed event emitter: the `on` / `once` / `off` of the Agora RTM Web SDK's objects.

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Handler = (...args: any[]) => void;

export class EventEmitter<Events extends { [event: string]: Handler }> {
  private readonly handlers = new Map<keyof Events, Set<Handler>>();

  /** Calls `listener` every time `event` happens. */
  on<E extends keyof Events>(event: E, listener: Events[E]): this {
    let set = this.handlers.get(event);
    if (!set) {
      set = new Set();
      this.handlers.set(event, set);
    }
    set.add(listener);
    return this;
  }

  /** Calls `listener` the next time `event` happens, once. */
  once<E extends keyof Events>(event: E, listener: Events[E]): this {
    const once = ((...args: Parameters<Events[E]>) => {
      this.off(event, once);
      listener(...args);
    }) as Events[E];
    return this.on(event, once);
  }

  off<E extends keyof Events>(event: E, listener: Events[E]): this {
    this.handlers.get(event)?.delete(listener);
    return this;
  }

  removeAllListeners<E extends keyof Events>(event?: E): this {
    if (event === undefined) {
      this.handlers.clear();
    } else {
      this.handlers.delete(event);
    }
    return this;
  }

  /** Calls the listeners of `event`; one that throws does not stop the others. */
  protected emit<E extends keyof Events>(event: E, ...args: Parameters<Events[E]>): void {
    for (const listener of [...(this.handlers.get(event) ?? [])]) {
      try {
        listener(...args);
      } catch (error) {
        console.error(`a ${String(event)} listener threw`, error);
      }
    }
  }
}
