"""An independent EC2 client for the tests (boto3, talking to moto): creates security groups,
plants rules as someone else would, and reports what a group really holds.

Usage: ec2.py ENDPOINT REGION create-group NAME...   (prints the new groups' ids in order)
       ec2.py ENDPOINT REGION rules GROUP_ID
       ec2.py ENDPOINT REGION plant GROUP_ID CIDR DESCRIPTION [TAG_KEY=VALUE]
       ec2.py ENDPOINT REGION start-recording
       ec2.py ENDPOINT REGION assume-role-calls    (what moto recorded since start-recording)
Prints JSON on stdout.
"""

import base64
import json
import sys
import urllib.parse
import urllib.request

import boto3


def main() -> None:
    endpoint, region, command, *args = sys.argv[1:]
    ec2 = boto3.client(
        "ec2",
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    if command == "create-group":
        ids = [ec2.create_security_group(GroupName=name, Description="portcullis test group")["GroupId"] for name in args]
        print(json.dumps({"group_ids": ids}))
    elif command == "rules":
        (group_id,) = args
        pages = ec2.get_paginator("describe_security_group_rules").paginate(
            Filters=[{"Name": "group-id", "Values": [group_id]}]
        )
        rules = [
            {
                "id": rule["SecurityGroupRuleId"],
                "cidr": rule.get("CidrIpv4") or rule.get("CidrIpv6"),
                "protocol": rule["IpProtocol"],
                "from_port": rule.get("FromPort"),
                "to_port": rule.get("ToPort"),
                "description": rule.get("Description", ""),
                "tags": {tag["Key"]: tag["Value"] for tag in rule.get("Tags", [])},
            }
            for page in pages
            for rule in page["SecurityGroupRules"]
            if not rule["IsEgress"]
        ]
        print(json.dumps(rules))
    elif command in ("plant", "plant-port"):
        port = 22
        if command == "plant-port":
            group_id, port_text, cidr, description, *tags = args
            port = int(port_text)
        else:
            group_id, cidr, description, *tags = args
        family = "Ipv6Ranges" if ":" in cidr else "IpRanges"
        key = "CidrIpv6" if ":" in cidr else "CidrIp"
        spec = []
        if tags:
            spec = [
                {
                    "ResourceType": "security-group-rule",
                    "Tags": [dict(zip(("Key", "Value"), tag.split("=", 1))) for tag in tags],
                }
            ]
        answer = ec2.authorize_security_group_ingress(
            GroupId=group_id,
            IpPermissions=[
                {
                    "IpProtocol": "tcp",
                    "FromPort": port,
                    "ToPort": port,
                    family: [{key: cidr, "Description": description}],
                }
            ],
            TagSpecifications=spec,
        )
        print(json.dumps({"id": answer["SecurityGroupRules"][0]["SecurityGroupRuleId"]}))
    elif command == "revoke":
        group_id, rule_id = args
        ec2.revoke_security_group_ingress(GroupId=group_id, SecurityGroupRuleIds=[rule_id])
        print(json.dumps({"revoked": rule_id}))
    elif command == "start-recording":
        # moto's request recorder: every request from now on, bodies included.
        urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/recorder/start-recording", method="POST"))
        print(json.dumps({"recording": True}))
    elif command == "assume-role-calls":
        with urllib.request.urlopen(f"{endpoint}/moto-api/recorder/download-recording") as answer:
            lines = answer.read().decode().splitlines()
        calls = []
        for line in filter(None, lines):
            entry = json.loads(line)
            body = entry.get("body") or ""
            if entry.get("body_encoded"):
                body = base64.b64decode(body).decode(errors="replace")
            form = {key: values[0] for key, values in urllib.parse.parse_qs(body).items()}
            if form.get("Action") == "AssumeRole":
                calls.append(form)
        print(json.dumps(calls))
    else:
        sys.exit(f"unknown command {command}")


if __name__ == "__main__":
    main()
