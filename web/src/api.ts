// The API as the page calls it: gRPC-Web to the server that served the page, with the access
// token of this tab's login. The token lives in this module only, never in storage: a reload
// or a new tab asks to log in again.
import { Code, ConnectError, createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import { ApprovalService } from "./gen/portcullis/v1/approval_pb";
import { AuditService } from "./gen/portcullis/v1/audit_pb";
import { AuthService } from "./gen/portcullis/v1/auth_pb";
import { ResourceIpService } from "./gen/portcullis/v1/resource_ip_pb";
import { ResourceService } from "./gen/portcullis/v1/resource_pb";
import { SessionService } from "./gen/portcullis/v1/session_pb";
import { UserService } from "./gen/portcullis/v1/user_pb";

let accessToken: string | undefined;
let onLoggedOut: (why: string) => void = () => {};

/** Keeps the token for this tab's calls (`undefined` forgets it). */
export function setAccessToken(token: string | undefined): void {
  accessToken = token;
}

/** What to do when the server no longer accepts the token (expired, closed, user disabled). */
export function whenLoggedOut(handler: (why: string) => void): void {
  onLoggedOut = handler;
}

const withToken: Interceptor = (next) => async (request) => {
  if (accessToken !== undefined) {
    request.header.set("authorization", `Bearer ${accessToken}`);
  }
  try {
    return await next(request);
  } catch (error) {
    const refused = ConnectError.from(error);
    if (refused.code === Code.Unauthenticated && accessToken !== undefined) {
      accessToken = undefined;
      onLoggedOut(refused.rawMessage);
    }
    throw error;
  }
};

const transport = createGrpcWebTransport({ baseUrl: location.origin, interceptors: [withToken] });

function client<T extends Parameters<typeof createClient>[0]>(service: T): Client<T> {
  return createClient(service, transport);
}

export const api = {
  approvals: client(ApprovalService),
  audit: client(AuditService),
  auth: client(AuthService),
  resourceIps: client(ResourceIpService),
  resources: client(ResourceService),
  sessions: client(SessionService),
  users: client(UserService),
};

/** The server's message for a failed call, as a person should read it. */
export function explain(error: unknown): string {
  const refused = ConnectError.from(error);
  if (refused.code === Code.Unavailable || refused.code === Code.Unknown) {
    return `The server could not be reached (${refused.rawMessage || "no answer"}).`;
  }
  return refused.rawMessage || refused.message;
}

/** Whether `error` is a call this page cancelled itself (leaving a view). */
export function isCancel(error: unknown): boolean {
  return ConnectError.from(error).code === Code.Canceled;
}

export function toDate(timestamp: Timestamp | undefined): Date | undefined {
  return timestamp === undefined ? undefined : timestampDate(timestamp);
}
