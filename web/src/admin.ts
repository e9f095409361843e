// What administrators do from the page: decide approval requests, create and disable users,
// assign resources, read the audit log.
import { api, explain, toDate } from "./api";
import { busy, field, formatTime, h, notice, show, table, words } from "./dom";
import { Role, type User } from "./gen/portcullis/v1/user_pb";
import type { Me } from "./me";

export async function approvalsView(main: HTMLElement): Promise<void> {
  const status = notice();
  const list = h("div", { class: "cards" });
  show(main, h("section", { "aria-labelledby": "approvals-title" }, h("h1", { id: "approvals-title" }, "Approval requests"), list, status.element));
  const load = async () => {
    try {
      const page = await api.approvals.listApprovalRequests({ pageSize: 100 });
      if (page.sessions.length === 0) list.replaceChildren(h("p", { class: "muted" }, "Nothing waits for your decision."));
      else list.replaceChildren();
      for (const session of page.sessions) {
        const reason = h("input", { type: "text", name: "reason", maxlength: 1000 });
        const approve = h("button", { type: "button" }, "Approve");
        const deny = h("button", { type: "button", class: "danger" }, "Deny");
        const result = notice();
        const decide = (button: HTMLButtonElement, call: () => Promise<unknown>, done: string) =>
          void busy(button, async () => {
            result.clear();
            try {
              await call();
              result.info(done);
              await load();
              status.info(done);
            } catch (error) {
              result.error(explain(error));
            }
          });
        approve.addEventListener("click", () =>
          decide(approve, () => api.approvals.approveSession({ id: session.id, reason: reason.value.trim() }), `Approved ${session.userEmail}'s request.`),
        );
        deny.addEventListener("click", () => {
          if (!reason.value.trim()) {
            result.error("Say why you deny the request.");
            reason.focus();
            return;
          }
          decide(deny, () => api.approvals.denySession({ id: session.id, reason: reason.value.trim() }), `Denied ${session.userEmail}'s request.`);
        });
        const approval = session.approval;
        const approvals = approval?.decisions.filter((decision) => decision.approve).length ?? 0;
        const resources = [...new Set(session.resourceIps.map((rule) => rule.resourceName))].join(", ");
        list.append(
          h(
            "article",
            { class: "card", "aria-label": `Request of ${session.userEmail}`, "data-session-id": session.id },
            h("h2", {}, `${session.userName || session.userEmail} asks for ${resources}`),
            h(
              "dl",
              { class: "facts" },
              h("dt", {}, "Requester"),
              h("dd", {}, session.userEmail),
              h("dt", {}, "Justification"),
              h("dd", {}, session.justification || "none given"),
              session.ticket && h("dt", {}, "Ticket"),
              session.ticket && h("dd", {}, session.ticket),
              h("dt", {}, "Address"),
              h("dd", {}, [session.ipv4Address, session.ipv6Address].filter(Boolean).join(", ")),
              h("dt", {}, "Approvals"),
              h("dd", {}, `${approvals}/${approval?.required ?? 1}, decide by ${formatTime(toDate(approval?.deadline))}`),
            ),
            field("Reason", reason, "Required to deny; recorded with your decision."),
            h("div", { class: "actions" }, approve, deny),
            result.element,
          ),
        );
      }
    } catch (error) {
      status.error(explain(error));
    }
  };
  await load();
}

export async function usersView(main: HTMLElement, me: Me): Promise<void> {
  const status = notice();
  const body = h("tbody");
  const email = h("input", { type: "email", name: "new-email", required: true });
  const name = h("input", { type: "text", name: "new-name" });
  const role = h("select", { name: "new-role" }, h("option", { value: Role.USER }, "user"), h("option", { value: Role.ADMIN }, "admin"));
  const create = h("button", { type: "submit" }, "Create user");
  const result = notice();
  const form = h(
    "form",
    { "aria-labelledby": "new-user-title", novalidate: true },
    h("h2", { id: "new-user-title" }, "New user"),
    field("Email", email),
    field("Full name", name),
    field("Role", role),
    h("div", { class: "actions" }, create),
    result.element,
  );
  show(main, h("section", { "aria-labelledby": "users-title" }, h("h1", { id: "users-title" }, "Users"), table(["Email", "Name", "Role", "State", ""], body)), form, status.element);

  const load = async () => {
    try {
      const users = await allUsers();
      body.replaceChildren(
        ...users.map((user) => {
          const disable = h("button", { type: "button", class: "small danger" }, "Disable");
          disable.setAttribute("aria-label", `Disable ${user.email}`);
          disable.addEventListener("click", () =>
            void busy(disable, async () => {
              try {
                await api.users.disableUser({ id: user.id });
                status.info(`Disabled ${user.email}: their sessions end and their rules are removed.`);
                await load();
              } catch (error) {
                status.error(explain(error));
              }
            }),
          );
          return h(
            "tr",
            { "data-email": user.email },
            h("td", {}, user.email),
            h("td", {}, user.fullName),
            h("td", {}, words(Role[user.role])),
            h("td", {}, user.disabled ? "disabled" : user.locked ? "locked" : "active"),
            h("td", {}, !user.disabled && user.id !== me.user.id && disable),
          );
        }),
      );
    } catch (error) {
      status.error(explain(error));
    }
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    void busy(create, async () => {
      result.clear();
      try {
        const created = await api.users.createUser({
          user: { email: email.value.trim(), fullName: name.value.trim(), role: Number(role.value) as Role },
        });
        result.info(`Created ${created.user?.email}. They log in with a code mailed to them.`);
        email.value = "";
        name.value = "";
        await load();
      } catch (error) {
        result.error(explain(error));
      }
    });
  });
  await load();
}

async function allUsers(): Promise<User[]> {
  const users: User[] = [];
  let pageToken = "";
  do {
    const page = await api.users.listUsers({ pageSize: 200, pageToken });
    users.push(...page.users);
    pageToken = page.nextPageToken;
  } while (pageToken);
  return users;
}

export async function resourcesView(main: HTMLElement): Promise<void> {
  const status = notice();
  const body = h("tbody");
  const resource = h("select", { name: "assign-resource" });
  const user = h("select", { name: "assign-user" });
  const assign = h("button", { type: "submit" }, "Assign");
  const unassign = h("button", { type: "button", class: "danger" }, "Unassign");
  const result = notice();
  const form = h(
    "form",
    { "aria-labelledby": "assign-title", novalidate: true },
    h("h2", { id: "assign-title" }, "Assignments"),
    field("Resource", resource),
    field("User", user),
    h("div", { class: "actions" }, assign, unassign),
    result.element,
  );
  show(main, h("section", { "aria-labelledby": "resources-title" }, h("h1", { id: "resources-title" }, "Resources"), table(["Name", "Provider", "Approval", "Assigned to"], body)), form, status.element);

  const load = async () => {
    try {
      const [resources, users] = await Promise.all([api.resources.listResources({ pageSize: 200 }), allUsers()]);
      // Who holds what: one list per user (the API answers resources by user).
      const holders = new Map<string, string[]>();
      await Promise.all(
        users.map(async (person) => {
          const held = await api.resources.listResources({ userId: person.id, pageSize: 200 });
          for (const item of held.resources) holders.set(item.id, [...(holders.get(item.id) ?? []), person.email]);
        }),
      );
      body.replaceChildren(
        ...resources.resources.map((item) =>
          h(
            "tr",
            { "data-resource": item.name },
            h("td", {}, item.name),
            h("td", {}, words(item.provider.case?.replace(/([A-Z])/g, "_$1"))),
            h("td", {}, item.approval?.required ? `${Math.max(1, item.approval.approvals)} needed` : "none"),
            h("td", { class: "holders" }, (holders.get(item.id) ?? []).sort().join(", ")),
          ),
        ),
      );
      const keep = (select: HTMLSelectElement, options: HTMLOptionElement[]) => {
        const chosen = select.value;
        select.replaceChildren(...options);
        if (chosen) select.value = chosen;
      };
      keep(resource, resources.resources.map((item) => h("option", { value: item.id }, item.name)));
      keep(user, users.filter((person) => !person.disabled).map((person) => h("option", { value: person.id }, person.email)));
    } catch (error) {
      status.error(explain(error));
    }
  };
  const change = (button: HTMLButtonElement, call: () => Promise<unknown>, done: () => string) =>
    void busy(button, async () => {
      result.clear();
      try {
        await call();
        result.info(done());
        await load();
      } catch (error) {
        result.error(explain(error));
      }
    });
  const chosen = () => `${resource.selectedOptions[0]?.text} and ${user.selectedOptions[0]?.text}`;
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    change(assign, () => api.resources.assignResource({ resourceId: resource.value, userId: user.value }), () => `Assigned: ${chosen()}.`);
  });
  unassign.addEventListener("click", () =>
    change(unassign, () => api.resources.unassignResource({ resourceId: resource.value, userId: user.value }), () => `Unassigned: ${chosen()}; their live sessions lose the rule.`),
  );
  await load();
}

export async function auditView(main: HTMLElement): Promise<void> {
  const status = notice();
  const body = h("tbody");
  show(main, h("section", { "aria-labelledby": "audit-title" }, h("h1", { id: "audit-title" }, "Audit log"), table(["Time", "Event", "Actor", "Target", "Address"], body)), status.element);
  try {
    const page = await api.audit.listAuditEvents({ pageSize: 200 });
    body.replaceChildren(
      ...page.auditEvents.map((event) =>
        h(
          "tr",
          {},
          h("td", {}, formatTime(toDate(event.time))),
          h("td", {}, event.type),
          h("td", {}, event.actorId),
          h("td", {}, `${event.targetType} ${event.targetId}`),
          h("td", {}, event.clientIp),
        ),
      ),
    );
  } catch (error) {
    status.error(explain(error));
  }
}
