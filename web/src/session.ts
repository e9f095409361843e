// The live session card: everything it shows comes from WatchSession, so a change made anywhere
// (the engine applying a rule, an admin stopping the session, an approval) appears without a
// reload. Extend, Stop and Retry act on it; the stream brings their effect back.
import { api, explain, isCancel, toDate } from "./api";
import { busy, formatTime, h, notice, remaining, show, words } from "./dom";
import { EndedReason, SessionStatus, type Session } from "./gen/portcullis/v1/session_pb";
import { ResourceIpStatus, type ResourceIp } from "./gen/portcullis/v1/resource_ip_pb";

const TERMINAL = [SessionStatus.FAILED, SessionStatus.EXPIRED, SessionStatus.CANCELLED];
const EXTENDABLE = [SessionStatus.ACTIVE, SessionStatus.PARTIAL, SessionStatus.EXPIRING];

export function isLive(session: Session): boolean {
  return !TERMINAL.includes(session.status);
}

export class SessionCard {
  readonly element: HTMLElement;
  private session: Session;
  private readonly stop = new AbortController();
  private readonly status = h("span", { class: "status" });
  private readonly countdown = h("span", { class: "countdown", role: "timer" });
  private readonly body = h("div");
  private readonly connection = notice();
  private readonly result = notice();
  private readonly timer: number;

  constructor(session: Session, private readonly extendMinutes: number) {
    this.session = session;
    this.element = h(
      "article",
      { class: "card session", "aria-labelledby": `s-${session.id}`, "data-session-id": session.id },
      h("h2", { id: `s-${session.id}` }, "Session ", this.status, " ", this.countdown),
      this.body,
      this.result.element,
      this.connection.element,
    );
    this.render();
    this.timer = window.setInterval(() => this.tick(), 1000);
    void this.watch();
  }

  /** Stops following the session (the view is left). */
  dispose(): void {
    this.stop.abort();
    window.clearInterval(this.timer);
  }

  private async watch(): Promise<void> {
    let delay = 1000;
    while (!this.stop.signal.aborted) {
      try {
        for await (const update of api.sessions.watchSession({ id: this.session.id }, { signal: this.stop.signal })) {
          if (update.session) this.update(update.session);
          this.connection.clear();
          delay = 1000;
        }
        // The stream ends after a terminal state; otherwise (a server restart) it is opened again.
        if (!isLive(this.session)) return;
      } catch (error) {
        if (this.stop.signal.aborted || isCancel(error)) return;
        this.connection.error(`Live updates paused: ${explain(error)} Trying again...`);
      }
      await new Promise((resolve) => window.setTimeout(resolve, delay));
      delay = Math.min(delay * 2, 30_000);
    }
  }

  private update(session: Session): void {
    // Each update carries the whole session; an older revision never replaces a newer one.
    if (session.revision < this.session.revision) return;
    this.session = session;
    this.render();
  }

  private tick(): void {
    const expires = toDate(this.session.expiresAt);
    const approval = this.session.approval;
    if (this.session.status === SessionStatus.AWAITING_APPROVAL && approval?.deadline) {
      this.countdown.textContent = `waits ${remaining(toDate(approval.deadline)!)}`;
    } else if (isLive(this.session) && expires) {
      this.countdown.textContent = `ends in ${remaining(expires)}`;
    } else {
      this.countdown.textContent = "";
    }
  }

  private render(): void {
    const session = this.session;
    const statusName = SessionStatus[session.status];
    this.status.textContent = words(statusName);
    this.status.dataset.status = statusName;
    this.status.className = `status status-${statusName.toLowerCase()}`;
    // When this revision reached the page: the browser test compares it with the server's times.
    this.element.dataset.renderedAt = String(Date.now());
    this.element.dataset.revision = String(session.revision);
    this.tick();

    const addresses = [session.ipv4Address, session.ipv6Address].filter(Boolean).join(", ");
    const rows = session.resourceIps.map((rule) => this.ruleRow(rule));
    const live = isLive(session);
    const extend = h("button", { type: "button" }, `Extend by ${hoursText(this.extendMinutes)}`);
    const stop = h("button", { type: "button", class: "danger" }, "Stop");
    extend.addEventListener("click", () =>
      void busy(extend, () => this.act(() => api.sessions.extendSession({ id: session.id, additionalMinutes: this.extendMinutes }), "Extended.")),
    );
    stop.addEventListener("click", () =>
      void busy(stop, () => this.act(() => api.sessions.stopSession({ id: session.id }), "Stopping: the rules are being removed.")),
    );

    show(
      this.body,
      h(
        "dl",
        { class: "facts" },
        h("dt", {}, "Address"),
        h("dd", { class: "addresses" }, addresses || "detecting"),
        h("dt", {}, "Expires"),
        h("dd", {}, formatTime(toDate(session.expiresAt)) || "when approved"),
        session.endedAt && h("dt", {}, "Ended"),
        session.endedAt &&
          h("dd", { class: "ended" }, `${formatTime(toDate(session.endedAt))} (${words(EndedReason[session.endedReason])})`),
      ),
      this.approvalText(),
      h(
        "table",
        { class: "rules" },
        h("caption", {}, "Firewall rules"),
        h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Resource"), h("th", { scope: "col" }, "Address"), h("th", { scope: "col" }, "Status"), h("th", { scope: "col" }, h("span", { class: "visually-hidden" }, "Actions")))),
        h("tbody", {}, ...rows),
      ),
      live && h("div", { class: "actions" }, EXTENDABLE.includes(session.status) && extend, stop),
    );
  }

  private approvalText(): HTMLElement | undefined {
    const approval = this.session.approval;
    if (!approval || approval.required === 0) return undefined;
    const approvals = approval.decisions.filter((decision) => decision.approve).length;
    const decisions = approval.decisions.map((decision) =>
      h("li", {}, `${decision.approve ? "approved" : "denied"} by ${decision.userEmail}${decision.reason ? `: ${decision.reason}` : ""}`),
    );
    const text =
      this.session.status === SessionStatus.AWAITING_APPROVAL
        ? `Waiting for approval (${approvals}/${approval.required}) until ${formatTime(toDate(approval.deadline))}.`
        : `Approvals: ${approvals}/${approval.required}.`;
    return h("div", { class: "approval" }, h("p", {}, text), decisions.length > 0 && h("ul", {}, ...decisions));
  }

  private ruleRow(rule: ResourceIp): HTMLElement {
    const statusName = ResourceIpStatus[rule.status];
    const retry =
      rule.status === ResourceIpStatus.FAILED && isLive(this.session)
        ? h("button", { type: "button", class: "small" }, "Retry")
        : undefined;
    retry?.addEventListener("click", () =>
      void busy(retry, () => this.act(() => api.resourceIps.retryResourceIp({ id: rule.id }), "Retrying the rule.")),
    );
    return h(
      "tr",
      { "data-resource": rule.resourceName },
      h("td", {}, rule.resourceName),
      h("td", {}, rule.ipAddress),
      h(
        "td",
        {},
        h("span", { class: `status status-${statusName.toLowerCase()}`, "data-status": statusName }, words(statusName)),
        rule.errorMessage && h("div", { class: "rule-error" }, rule.errorMessage),
      ),
      h("td", {}, retry),
    );
  }

  private async act(call: () => Promise<unknown>, done: string): Promise<void> {
    this.result.clear();
    try {
      await call();
      this.result.info(done);
    } catch (error) {
      this.result.error(explain(error));
    }
  }
}

export function hoursText(minutes: number): string {
  if (minutes % 60 === 0) return `${minutes / 60} h`;
  if (minutes > 60) return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
  return `${minutes} min`;
}
