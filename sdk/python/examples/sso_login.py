"""Log in through the organization's identity provider, as `pcl login --sso` does: print the URL to
open in a browser (on any machine), wait until the provider has sent that browser back to the
server, then call the API with the login's access token.

    python examples/sso_login.py --addr localhost:50051 --insecure --organization ORG_ID
"""

from __future__ import annotations

import argparse
import sys

import grpc

import portcullis
from portcullis.v1 import auth_pb2


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--addr", default="localhost:50051")
    parser.add_argument("--insecure", action="store_true", help="connect without TLS (a local server)")
    whose = parser.add_mutually_exclusive_group(required=True)
    whose.add_argument("--organization", help="the organization whose identity provider to log in through")
    whose.add_argument("--email", help="your email, whose domain picks the provider")
    args = parser.parse_args()

    # Starting and waiting for a login need no credential.
    with portcullis.Client(args.addr, insecure=args.insecure) as client:
        started = client.auth.StartSsoLogin(
            auth_pb2.StartSsoLoginRequest(organization_id=args.organization or "", email=args.email or "")
        )
        print(f"To log in, open this URL in a browser:\n\n  {started.authorization_url}\n", flush=True)
        wait = auth_pb2.WaitSsoLoginRequest(sso_login_id=started.sso_login_id, poll_secret=started.poll_secret)
        try:
            login = next(
                step.login for step in client.auth.WaitSsoLogin(wait) if step.state == auth_pb2.SSO_LOGIN_STATE_DONE
            )
        except grpc.RpcError as error:
            print(f"the login was refused: {error.details()}", file=sys.stderr)
            return 1

    # The token authenticates calls until it expires (ExtendLoginSession renews it).
    with portcullis.Client(args.addr, bearer_token=login.access_token, insecure=args.insecure) as client:
        current = client.auth.GetCurrentLogin(auth_pb2.GetCurrentLoginRequest())
        expires = login.expires_at.ToDatetime().strftime("%H:%M:%S UTC")
        print(f"logged in as {current.alias}, groups {list(current.groups)}; the token expires at {expires}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
