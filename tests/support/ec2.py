"""An independent EC2 client for the tests (boto3, talking to moto): creates security groups,
plants rules as someone else would, and reports what a group really holds.

Usage: ec2.py ENDPOINT REGION create-group NAME
       ec2.py ENDPOINT REGION rules GROUP_ID
       ec2.py ENDPOINT REGION plant GROUP_ID CIDR DESCRIPTION [TAG_KEY=VALUE]
       ec2.py ENDPOINT REGION assumed-roles
Prints JSON on stdout.
"""

import json
import sys
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
        (name,) = args
        group = ec2.create_security_group(GroupName=name, Description="portcullis test group")
        print(json.dumps({"group_id": group["GroupId"]}))
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
    elif command == "assumed-roles":
        # moto's own record of every AssumeRole call, as moto's dashboard reads it.
        with urllib.request.urlopen(f"{endpoint}/moto-api/data.json") as answer:
            data = json.load(answer)
        roles = [
            {"access_key_id": role["access_key_id"], "role_arn": role["role_arn"], "external_id": role["external_id"]}
            for role in data.get("sts", {}).get("AssumedRole", [])
        ]
        print(json.dumps(roles))
    else:
        sys.exit(f"unknown command {command}")


if __name__ == "__main__":
    main()
