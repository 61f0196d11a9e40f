"""The optional fleet (``Fleet=true``): an Auto Scaling group of hosts, each installing the
release tarball ``FleetRelease`` and running the four workers and the sweep's timer as the
stack configures them; one target tracking policy per worker queue on its backlog per
instance, AWS's pattern for SQS workers; and, when the release changes, a rolling replacement
of the hosts, one at a time, each signalling that its workers started
(docs/deploy.md#a-fleet-that-scales-on-the-queues).
"""

from __future__ import annotations

import json
from typing import Any

from deploy.cloudformation.common import base, camel, settings
from deploy.iam import WORKERS
from util.util_config import Config

FLEET = "Fleet"  # the parameter, and the condition of every resource here
RELEASE, SUBNETS, GROUP = "FleetRelease", "FleetSubnets", "FleetGroup"
LAUNCH_TEMPLATE, LOG_GROUP = "FleetLaunchTemplate", "FleetLogGroup"
IMAGE = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"
# The acceptable backlog per instance of each worker's queue, the policies' target values:
# the acceptable latency over the time an instance takes per message (docs/deploy.md#capacity).
BACKLOG = {"archive": 1600, "restore": 230, "thaw": 420, "notify": 160}
# What a host runs, each as its own utility role (deploy/iam; docs/deploy.md#iam).
HOST_UTILITIES = (*WORKERS, "reconcile")
EMF_DIR = "/var/log/gas"
AGENT = "/opt/aws/amazon-cloudwatch-agent"
SIGNAL_TIMEOUT = "PT20M"  # the install (dnf, pip) and the workers' start


def backlog_parameter(worker: str) -> str:
    return f"Fleet{camel(worker)}Backlog"


def parameters() -> dict[str, Any]:
    params: dict[str, Any] = {
        FLEET: {
            "Type": "String",
            "Default": "false",
            "AllowedValues": ["true", "false"],
            "Description": "true: an Auto Scaling group of worker hosts, scaled on the queues",
        },
        RELEASE: {
            "Type": "String",
            "Default": "",
            "AllowedPattern": r"^(s3://[^/\s]+/\S+)?$",
            "Description": "S3 URL of the release tarball the hosts install (git archive "
            "--format=tar.gz HEAD); a new URL replaces the hosts one at a time",
        },
        SUBNETS: {
            "Type": "CommaDelimitedList",
            "Default": "",
            "Description": "subnets of the hosts, with a way out to AWS and PyPI (HTTPS)",
        },
        "FleetInstanceType": {
            "Type": "String",
            "Default": "c7i.large",
            "Description": "instance type of the hosts",
        },
        "FleetImageId": {
            "Type": "AWS::SSM::Parameter::Value<AWS::EC2::Image::Id>",
            "Default": IMAGE,
            "Description": "the hosts' image: Amazon Linux 2023 (dnf, systemd, the AWS CLI)",
        },
        "FleetMinSize": {
            "Type": "Number",
            "Default": "1",
            "MinValue": 1,
            "Description": "fewest hosts: at least 1, a backlog per instance needs one",
        },
        "FleetMaxSize": {"Type": "Number", "Default": "4", "MinValue": 1},
    }
    for worker in WORKERS:
        params[backlog_parameter(worker)] = {
            "Type": "Number",
            "Default": str(BACKLOG[worker]),
            "MinValue": 1,
            "Description": f"acceptable {worker} messages per host: latency / seconds a host "
            "takes per message (docs/deploy.md#capacity)",
        }
    return params


RULES = {
    "FleetNeedsReleaseAndSubnets": {
        "RuleCondition": {"Fn::Equals": [{"Ref": FLEET}, "true"]},
        "Assertions": [
            {
                "Assert": {"Fn::Not": [{"Fn::Equals": [{"Ref": RELEASE}, ""]}]},
                "AssertDescription": "Fleet=true needs FleetRelease, the release's S3 URL",
            },
            {
                "Assert": {"Fn::Not": [{"Fn::Contains": [{"Ref": SUBNETS}, ""]}]},
                "AssertDescription": "Fleet=true needs FleetSubnets",
            },
        ],
    }
}
CONDITIONS = {FLEET: {"Fn::Equals": [{"Ref": FLEET}, "true"]}}


def resources(config: Config) -> dict[str, Any]:
    made: dict[str, Any] = {
        LOG_GROUP: {"Type": "AWS::Logs::LogGroup", "Properties": {"RetentionInDays": 30}},
        # The instance role otherwise may only assume the utility roles.
        "FleetHostPolicy": {
            "Type": "AWS::IAM::Policy",
            "Properties": {
                "PolicyName": "gas-fleet-host",
                "Roles": [{"Ref": "InstanceRole"}],
                "PolicyDocument": {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Sid": "Release",
                            "Effect": "Allow",
                            "Action": "s3:GetObject",
                            "Resource": {
                                "Fn::Sub": [
                                    "arn:aws:s3:::${Object}",
                                    {
                                        "Object": {
                                            "Fn::Select": [
                                                1,
                                                {"Fn::Split": ["s3://", {"Ref": RELEASE}]},
                                            ]
                                        }
                                    },
                                ]
                            },
                        },
                        {
                            "Sid": "EmfLines",
                            "Effect": "Allow",
                            "Action": [
                                "logs:CreateLogStream",
                                "logs:DescribeLogStreams",
                                "logs:PutLogEvents",
                            ],
                            "Resource": {"Fn::GetAtt": [LOG_GROUP, "Arn"]},
                        },
                    ],
                },
            },
        },
        LAUNCH_TEMPLATE: {
            "Type": "AWS::EC2::LaunchTemplate",
            "Properties": {
                "LaunchTemplateData": {
                    "ImageId": {"Ref": "FleetImageId"},
                    "InstanceType": {"Ref": "FleetInstanceType"},
                    "IamInstanceProfile": {"Arn": {"Fn::GetAtt": ["InstanceProfile", "Arn"]}},
                    "MetadataOptions": {"HttpEndpoint": "enabled", "HttpTokens": "required"},
                    "UserData": {"Fn::Base64": {"Fn::Sub": user_data(config)}},
                }
            },
        },
        GROUP: {
            "Type": "AWS::AutoScaling::AutoScalingGroup",
            # Each host signals once its workers consume their queues (or that they could not).
            "CreationPolicy": {
                "ResourceSignal": {"Count": {"Ref": "FleetMinSize"}, "Timeout": SIGNAL_TIMEOUT}
            },
            # A new release is a new launch template version: the hosts are replaced one at a
            # time, each new one signalling before the next goes; a failed one rolls back.
            "UpdatePolicy": {
                "AutoScalingRollingUpdate": {
                    "MaxBatchSize": 1,
                    "MinInstancesInService": 0,
                    "PauseTime": SIGNAL_TIMEOUT,
                    "WaitOnResourceSignals": True,
                    "SuspendProcesses": [
                        "HealthCheck",
                        "ReplaceUnhealthy",
                        "AZRebalance",
                        "AlarmNotification",
                        "ScheduledActions",
                    ],
                },
                "AutoScalingScheduledAction": {"IgnoreUnmodifiedGroupSizeProperties": True},
            },
            "Properties": {
                "MinSize": {"Ref": "FleetMinSize"},
                "MaxSize": {"Ref": "FleetMaxSize"},
                "VPCZoneIdentifier": {"Ref": SUBNETS},
                "LaunchTemplate": {
                    "LaunchTemplateId": {"Ref": LAUNCH_TEMPLATE},
                    "Version": {"Fn::GetAtt": [LAUNCH_TEMPLATE, "LatestVersionNumber"]},
                },
                # The policies divide by it; Auto Scaling sends it only when asked.
                "MetricsCollection": [
                    {"Granularity": "1Minute", "Metrics": ["GroupInServiceInstances"]}
                ],
                "DefaultInstanceWarmup": 300,
            },
        },
    }
    for worker in WORKERS:
        queue = getattr(config, worker).queue
        made[f"FleetScaling{camel(worker)}"] = {
            "Type": "AWS::AutoScaling::ScalingPolicy",
            "Properties": {
                "AutoScalingGroupName": {"Ref": GROUP},
                "PolicyType": "TargetTrackingScaling",
                "TargetTrackingConfiguration": {
                    "TargetValue": {"Ref": backlog_parameter(worker)},
                    "CustomizedMetricSpecification": {"Metrics": backlog_per_instance(queue)},
                },
            },
        }
    return {name: {"Type": r.pop("Type"), "Condition": FLEET, **r} for name, r in made.items()}


def backlog_per_instance(queue: str) -> list[dict[str, Any]]:
    """The queue's visible messages over the group's hosts in service, as AWS's example of
    target tracking on metric math has it (statistics and all)."""
    return [
        {
            "Id": "m1",
            "Label": "messages visible",
            "MetricStat": {
                "Metric": {
                    "Namespace": "AWS/SQS",
                    "MetricName": "ApproximateNumberOfMessagesVisible",
                    "Dimensions": [
                        {
                            "Name": "QueueName",
                            "Value": {"Fn::GetAtt": [f"Queue{base(queue, 'Queue')}", "QueueName"]},
                        }
                    ],
                },
                "Stat": "Sum",
            },
            "ReturnData": False,
        },
        {
            "Id": "m2",
            "Label": "hosts in service",
            "MetricStat": {
                "Metric": {
                    "Namespace": "AWS/AutoScaling",
                    "MetricName": "GroupInServiceInstances",
                    "Dimensions": [{"Name": "AutoScalingGroupName", "Value": {"Ref": GROUP}}],
                },
                "Stat": "Average",
            },
            "ReturnData": False,
        },
        {"Id": "e1", "Label": "backlog per instance", "Expression": "m1 / m2", "ReturnData": True},
    ]


def user_data(config: Config) -> str:
    """A host's boot script (for Fn::Sub): docs/deploy.md's install, configure and start steps,
    with the stack's settings and roles, the EMF lines shipped to the log group, then
    cfn-signal with the outcome."""
    env = "\n".join(f"{name}=${{{ref}}}" for name, ref in settings(config).items())
    profiles = "\n".join(
        f"[profile gas-{u}]\nrole_arn = ${{Role{camel(u)}.Arn}}\n"
        "credential_source = Ec2InstanceMetadata\n"
        for u in HOST_UTILITIES
    )
    units = [f"gas-worker@{w}" for w in WORKERS]
    agent = {
        "logs": {
            "logs_collected": {
                "files": {
                    "collect_list": [
                        {
                            "file_path": f"{EMF_DIR}/{unit}.emf",
                            "log_group_name": f"${{{LOG_GROUP}}}",
                            "log_stream_name": f"{{instance_id}}/{unit}",
                        }
                        for unit in [*units, "gas-reconcile"]
                    ]
                }
            }
        }
    }
    return f"""#!/bin/bash
# A GAS fleet host (deploy/cloudformation/fleet.py): the steps of docs/deploy.md.
set -euo pipefail
signal() {{
  /opt/aws/bin/cfn-signal --exit-code "$1" --stack '${{AWS::StackName}}' \\
    --resource {GROUP} --region '${{AWS::Region}}'
}}
trap 'signal 1' ERR
dnf install -y python3.11 make aws-cfn-bootstrap amazon-cloudwatch-agent logrotate
install -d /opt/gas
aws s3 cp --region '${{AWS::Region}}' '${{{RELEASE}}}' /tmp/gas-release.tar.gz
tar -xzf /tmp/gas-release.tar.gz -C /opt/gas
make -C /opt/gas install PYTHON=python3.11
cd /opt/gas/deploy/systemd
install -m 644 gas.sysusers.conf /etc/sysusers.d/gas.conf
systemd-sysusers
install -m 644 gas-worker@.service gas-workers.target gas-reconcile.service \\
  gas-reconcile.timer /etc/systemd/system/
install -d -m 750 -g gas /etc/gas
cat > /etc/gas/gas.env <<'END'
AWS_DEFAULT_REGION=${{AWS::Region}}
AWS_CONFIG_FILE=/etc/gas/aws-config
GAS_METRICS_EMF=stdout
{env}
END
cat > /etc/gas/aws-config <<'END'
{profiles}END
for utility in {" ".join(HOST_UTILITIES)}; do
  echo "AWS_PROFILE=gas-$utility" > "/etc/gas/$utility.env"
done
chgrp gas /etc/gas/*
chmod 640 /etc/gas/*
# Each unit's stdout, its EMF lines, to a file the CloudWatch agent ships to {LOG_GROUP}.
install -d -m 755 {EMF_DIR}
for unit in gas-worker@ gas-reconcile; do
  install -d "/etc/systemd/system/$unit.service.d"
  printf '[Service]\\nStandardOutput=append:{EMF_DIR}/%%N.emf\\n' \\
    > "/etc/systemd/system/$unit.service.d/emf.conf"
done
cat > /etc/logrotate.d/gas <<'END'
{EMF_DIR}/*.emf {{
    daily
    rotate 2
    missingok
    copytruncate
}}
END
cat > {AGENT}/etc/gas.json <<'END'
{json.dumps(agent, indent=1)}
END
{AGENT}/bin/amazon-cloudwatch-agent-ctl -a fetch-config -m ec2 -s -c file:{AGENT}/etc/gas.json
systemctl daemon-reload
systemctl enable --now {" ".join(units)}
systemctl enable gas-workers.target
systemctl enable --now gas-reconcile.timer
signal 0
"""


def outputs() -> dict[str, Any]:
    return {
        GROUP: {
            "Condition": FLEET,
            "Description": "the Auto Scaling group of the worker hosts",
            "Value": {"Ref": GROUP},
        }
    }
