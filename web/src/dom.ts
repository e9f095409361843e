// A few helpers to build the page from plain DOM nodes.

type Child = Node | string | false | null | undefined;
type Attributes = Record<string, string | boolean | number | EventListener | undefined>;

/** An element with attributes (`on*` ones become listeners) and children. */
export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attributes: Attributes = {},
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === false) continue;
    if (typeof value === "function") {
      element.addEventListener(name.slice(2), value);
    } else if (value === true) {
      element.setAttribute(name, "");
    } else {
      element.setAttribute(name, String(value));
    }
  }
  element.append(...children.filter((child): child is Node | string => child !== false && child != null));
  return element;
}

/** Replaces what `parent` shows. */
export function show(parent: Element, ...children: Child[]): void {
  parent.replaceChildren(...children.filter((child): child is Node | string => child !== false && child != null));
}

/** A labelled input: the label names it for screen readers and a click focuses it. */
export function field(label: string, input: HTMLInputElement | HTMLSelectElement | HTMLTextAreaElement, hint?: string): HTMLElement {
  const id = input.id || `f-${Math.random().toString(36).slice(2, 10)}`;
  input.id = id;
  const hintNode = hint ? h("small", { id: `${id}-hint` }, hint) : undefined;
  if (hintNode) input.setAttribute("aria-describedby", hintNode.id);
  return h("div", { class: "field" }, h("label", { for: id }, label), input, hintNode);
}

/** The place a view reports an error or a result; screen readers announce it. */
export function notice(): { element: HTMLElement; error(text: string): void; info(text: string): void; clear(): void } {
  const element = h("p", { class: "notice-line", role: "status", "aria-live": "polite" });
  return {
    element,
    error(text) {
      element.className = "notice-line error";
      element.setAttribute("role", "alert");
      element.textContent = text;
    },
    info(text) {
      element.className = "notice-line info";
      element.setAttribute("role", "status");
      element.textContent = text;
    },
    clear() {
      element.className = "notice-line";
      element.textContent = "";
    },
  };
}

/** Runs `action` with `button` disabled, so a double click sends one call. */
export async function busy<T>(button: HTMLButtonElement, action: () => Promise<T>): Promise<T> {
  button.disabled = true;
  try {
    return await action();
  } finally {
    button.disabled = false;
  }
}

export function formatTime(date: Date | undefined): string {
  return date === undefined ? "" : date.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "medium" });
}

/** `1 h 05 min`, `4 min 09 s`: what is left until `until`. */
export function remaining(until: Date, now = Date.now()): string {
  const seconds = Math.max(0, Math.round((until.getTime() - now) / 1000));
  const hours = Math.floor(seconds / 3600);
  const minutes = Math.floor((seconds % 3600) / 60);
  const rest = seconds % 60;
  if (hours > 0) return `${hours} h ${String(minutes).padStart(2, "0")} min`;
  return `${minutes} min ${String(rest).padStart(2, "0")} s`;
}

/** An enum value's name as words: `AWAITING_APPROVAL` → `awaiting approval`. */
export function words(name: string | undefined): string {
  return (name ?? "unknown").replaceAll("_", " ").toLowerCase();
}

/** A table with a header row (an empty title names an actions column for screen readers). */
export function table(titles: string[], body: HTMLElement): HTMLElement {
  return h(
    "div",
    { class: "scroll" },
    h(
      "table",
      {},
      h(
        "thead",
        {},
        h("tr", {}, ...titles.map((title) => h("th", { scope: "col" }, title || h("span", { class: "visually-hidden" }, "Actions")))),
      ),
      body,
    ),
  );
}
