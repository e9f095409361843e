"""Start a session for an address and watch it until every rule is applied.

    PORTCULLIS_API_KEY=pcl_… python examples/start_session.py --addr localhost:50051 --insecure --ipv4 203.0.113.7
"""

from __future__ import annotations

import argparse
import os
import sys

import portcullis
from portcullis.v1 import resource_ip_pb2, session_pb2


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--addr", default="localhost:50051")
    parser.add_argument("--insecure", action="store_true", help="connect without TLS (a local server)")
    parser.add_argument("--ipv4", help="address to open (default: the one the server sees)")
    parser.add_argument("--hours", type=int, default=1)
    parser.add_argument("--stop", action="store_true", help="stop the session once it is active")
    args = parser.parse_args()
    api_key = os.environ.get("PORTCULLIS_API_KEY")
    if not api_key:
        print("set PORTCULLIS_API_KEY", file=sys.stderr)
        return 2

    with portcullis.Client(args.addr, api_key=api_key, insecure=args.insecure) as client:
        request = session_pb2.StartSessionRequest(duration_hours=args.hours)
        if args.ipv4:
            request.ipv4_address = args.ipv4
        try:
            session = client.sessions.StartSession(request).session
        except portcullis.AlreadyExists as error:
            print(f"this address already has a live session: {error.message}", file=sys.stderr)
            return 1
        print(f"session {session.id} started")
        for state in client.watch_session(session.id):
            print(session_pb2.SessionStatus.Name(state.status))
            for rule in state.resource_ips:
                status = resource_ip_pb2.ResourceIpStatus.Name(rule.status)
                print(f"  {rule.resource_name} {rule.ip_address} {status} {rule.error_message}")
            if state.status in (session_pb2.SESSION_STATUS_ACTIVE, session_pb2.SESSION_STATUS_PARTIAL):
                print(f"open until {state.expires_at.ToDatetime().isoformat()}Z")
                if args.stop:
                    client.sessions.StopSession(session_pb2.StopSessionRequest(id=session.id))
                return 0
            if state.status == session_pb2.SESSION_STATUS_FAILED:
                print("every rule failed", file=sys.stderr)
                return 1
    print("the session ended before it was active", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
