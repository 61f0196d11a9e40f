"""deploy/cloudformation/gas.yaml: generated, lint-free, and describing what the local stack makes.

No drift: the template, resolved with its default parameters, is read into the same plain
data `util.doctor.describe` reads from the local stack, and the two must be equal for each
back end. Queues and their dead-letter queues, redrive and visibility, queue and topic
policies, subscriptions, buckets' lifecycle, versioning, Object Lock, default encryption and
notifications, tables and indexes, the SES identity: whatever one side has and the other
lacks fails the test. The roles' KMS policies (KmsKeyArn) are checked on their own, and so
are the fleet (``Fleet=true``: its policies scale on queues it makes, a new release replaces the
hosts) and the alarms (``AlarmEmail``: each watches a queue the template makes or a metric the
code emits, and the local stack makes the same).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from cfnlint.api import lint, lint_file
from moto import mock_aws

from deploy.cloudformation import text
from deploy.cloudformation.__main__ import TEMPLATE
from deploy.iam import WORKERS
from localaws import dynamodb as dynamodb_emulation
from localaws import glacier as glacier_emulation
from localaws import s3 as s3_emulation
from localaws import settings as local_settings
from localaws.stack import REGION, create_resources
from tests import emf
from tests.conftest import ROOT, Stack
from util.aws import Aws
from util.doctor.buckets import default_retention, lifecycle_facts
from util.doctor.doctor import SQS_DEFAULTS, describe
from util.doctor.iam import grants
from util.doctor.services import table_shape
from util.reconcile.reconcile import Reconciler
from util.resources import RESTORE_COMPLETED, utility_config_files
from util.util_config import Config, load
from util.worker import Worker

ACCOUNT = "123456789012"  # moto's
KEY = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
NO_VALUE = object()  # AWS::NoValue: the property or list item is left out


def test_gas_yaml_is_the_generated_template() -> None:
    # Regenerate with `python -m deploy.cloudformation write`.
    assert TEMPLATE.read_text() == text()


def test_cfn_lint_finds_nothing() -> None:
    assert [str(match) for match in lint_file(Path(TEMPLATE))] == []


class Resolved:
    """The template's resources with their parameters' defaults, as CloudFormation makes them."""

    def __init__(self, template: dict[str, Any], **parameters: str):
        self.parameters = {name: p["Default"] for name, p in template["Parameters"].items()}
        self.parameters.update(
            parameters,
            **{
                "AWS::AccountId": ACCOUNT,
                "AWS::Region": REGION,
                "AWS::Partition": "aws",
                "AWS::StackName": "gas",
                "AWS::NoValue": NO_VALUE,
            },
        )
        self.raw = template["Resources"]
        self.conditions = {n: self.eval(c) for n, c in template["Conditions"].items()}
        self.resources = {
            n: {"Type": r["Type"], "Properties": self.eval(r["Properties"])}
            for n, r in self.raw.items()
            if self.conditions.get(r.get("Condition"), True)
        }

    def of(self, kind: str) -> Iterator[dict[str, Any]]:
        return (r["Properties"] for r in self.resources.values() if r["Type"] == kind)

    def ref(self, name: str) -> Any:
        if name in self.parameters:
            return self.parameters[name]
        resource = self.raw[name]
        properties = self.eval(resource["Properties"])
        return {
            # Unnamed, CloudFormation names it after the stack and the logical id.
            "AWS::SNS::Topic": lambda: self.arn("sns", properties.get("TopicName", name)),
            "AWS::SQS::Queue": lambda: properties["QueueName"],
            "AWS::S3::Bucket": lambda: properties["BucketName"],
        }.get(resource["Type"], lambda: name)()

    def get_att(self, name: str, attribute: str) -> str:
        resource = self.raw[name]
        if resource["Type"] == "AWS::SQS::Queue":
            queue = self.eval(resource["Properties"])["QueueName"]
            return {"Arn": self.arn("sqs", queue), "QueueName": queue}[attribute]
        if resource["Type"] == "AWS::IAM::Role" and attribute == "Arn":
            return f"arn:aws:iam::{ACCOUNT}:role/{name}"
        return f"{name}.{attribute}"  # what only AWS knows (a version, a log group's ARN)

    @staticmethod
    def arn(service: str, name: str) -> str:
        return f"arn:aws:{service}:{REGION}:{ACCOUNT}:{name}"

    def eval(self, value: Any) -> Any:
        if isinstance(value, list):
            return [v for v in map(self.eval, value) if v is not NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) != 1 or not next(iter(value)).startswith(("Ref", "Fn::")):
            return {k: self.eval(v) for k, v in value.items()}
        ((function, argument),) = value.items()
        if function == "Ref":
            return self.ref(argument)
        if function == "Fn::GetAtt":
            return self.get_att(*argument)
        if function == "Fn::Equals":
            return self.eval(argument[0]) == self.eval(argument[1])
        if function == "Fn::Not":
            return not self.eval(argument[0])
        if function == "Fn::If":
            return self.eval(argument[1] if self.conditions[argument[0]] else argument[2])
        if function == "Fn::Select":
            return self.eval(argument[1])[argument[0]]
        if function == "Fn::Split":
            return self.eval(argument[1]).split(argument[0])
        if function == "Fn::Sub":
            string, names = (argument, {}) if isinstance(argument, str) else argument
            names = {k: self.eval(v) for k, v in names.items()}
            return re.sub(
                r"\$\{([\w:.]+)\}",
                lambda m: str(
                    names[m[1]]
                    if m[1] in names
                    else self.get_att(*m[1].split("."))
                    if "." in m[1]
                    else self.ref(m[1])
                ),
                string,
            )
        if function == "Fn::Base64":  # the text the instance reads
            return self.eval(argument)
        raise AssertionError(f"intrinsic function {function} not resolved here")

    def describe(self) -> dict[str, Any]:
        """`util.doctor.describe`'s data, of what this template makes."""
        name = lambda arn: arn.rsplit(":", 1)[1]  # noqa: E731
        policies: dict[str, list] = {}
        for p in self.of("AWS::SQS::QueuePolicy"):
            for queue in p["Queues"]:
                policies.setdefault(queue, []).extend(grants(p["PolicyDocument"]))
        queues = {}
        for q in self.of("AWS::SQS::Queue"):
            redrive = q.get("RedrivePolicy")
            queues[q["QueueName"]] = {
                **{k: int(q.get(k, v)) for k, v in SQS_DEFAULTS.items()},
                "Arn": self.arn("sqs", q["QueueName"]),
                "RedrivePolicy": redrive
                and {
                    "deadLetterQueue": name(redrive["deadLetterTargetArn"]),
                    "maxReceiveCount": int(redrive["maxReceiveCount"]),
                },
                "Policy": sorted(set(policies.get(q["QueueName"], []))),
            }
        topics = {
            t["TopicName"]: self.arn("sns", t["TopicName"]) for t in self.of("AWS::SNS::Topic")
        }
        thaw = self.parameters["GasThawTopic"]
        buckets = {
            b["BucketName"]: {
                **lifecycle_facts(lifecycle_rules(b)),
                "Versioning": b.get("VersioningConfiguration", {}).get("Status", ""),
                "DefaultRetention": default_retention(
                    b.get("ObjectLockConfiguration", {}).get("Rule", {}).get("DefaultRetention")
                ),
                **encryption(b),
                "RestoreNotices": sorted(
                    c["Topic"]
                    for c in b.get("NotificationConfiguration", {}).get("TopicConfigurations", [])
                    if c["Event"] == RESTORE_COMPLETED
                ),
            }
            for b in self.of("AWS::S3::Bucket")
        }
        return {
            "queues": queues,
            "topics": topics,
            "thaw_topic_policy": sorted(
                {
                    g
                    for p in self.of("AWS::SNS::TopicPolicy")
                    if topics[thaw] in p["Topics"]
                    for g in grants(p["PolicyDocument"])
                }
            ),
            "subscriptions": sorted(
                [
                    name(s["TopicArn"]),
                    name(s["Endpoint"]),
                    str(s.get("RawMessageDelivery", "false")).lower() == "true",
                ]
                for s in self.of("AWS::SNS::Subscription")
            ),
            "buckets": buckets,
            "tables": {t["TableName"]: table_shape(t) for t in self.of("AWS::DynamoDB::Table")},
            "sender": sorted(i["EmailIdentity"] for i in self.of("AWS::SES::EmailIdentity")),
        }


def lifecycle_rules(bucket: dict[str, Any]) -> list[dict[str, Any]]:
    """A bucket's lifecycle rules as S3's API answers them (ID, Filter, Expiration)."""
    return [
        {
            **rule,
            "ID": rule.get("Id"),
            "Filter": {
                "Prefix": rule.get("Prefix", ""),
                "Tags": rule.get("TagFilters", []),
                **{
                    k: rule[k] for k in ("ObjectSizeGreaterThan", "ObjectSizeLessThan") if k in rule
                },
            },
            "Expiration": {
                "ExpiredObjectDeleteMarker": rule.get("ExpiredObjectDeleteMarker", False)
            },
        }
        for rule in bucket.get("LifecycleConfiguration", {}).get("Rules", [])
    ]


def encryption(bucket: dict[str, Any]) -> dict[str, str]:
    """A bucket's default encryption and its key (S3's default: SSE-S3)."""
    rules = bucket.get("BucketEncryption", {}).get("ServerSideEncryptionConfiguration", [])
    default = rules[0]["ServerSideEncryptionByDefault"] if rules else {}
    return {
        "Encryption": default.get("SSEAlgorithm", "AES256"),
        "KmsKey": default.get("KMSMasterKeyID", ""),
    }


def template() -> dict[str, Any]:
    return yaml.safe_load(TEMPLATE.read_text())


@dataclass
class Local:
    """The local stack of one back end, in moto in process."""

    backend: str
    aws: Aws
    config: Config

    def state(self) -> dict[str, Any]:
        """What it has, read as the doctor reads it."""
        state = describe(self.aws, self.config)
        # The sender is verified at once locally, pending until its link is clicked on AWS.
        state["sender"] = sorted(state["sender"])
        return state

    def template_state(self, template: dict[str, Any]) -> dict[str, Any]:
        return Resolved(template, GasArchiveBackend=self.backend).describe()


@pytest.fixture
def local(aws_env: None, request: pytest.FixtureRequest) -> Iterator[Local]:
    config = load(None, utility_config_files(), {"GAS_GAS_ARCHIVE_BACKEND": request.param})
    dynamodb_emulation.install()
    glacier_emulation.install(local_settings.Settings.from_config(config.local))
    s3_emulation.install()
    with mock_aws():
        aws = Aws(config)
        create_resources(aws, config)
        yield Local(request.param, aws, config)


BACKENDS = pytest.mark.parametrize("local", ["vault", "s3"], indirect=True)


@BACKENDS
def test_the_template_makes_what_the_local_stack_makes(local: Local) -> None:
    assert local.template_state(template()) == local.state()


@BACKENDS
def test_the_buckets_workers_upload_to_abort_incomplete_uploads(local: Local) -> None:
    # A worker killed mid-upload (thaw into the results bucket) or mid-copy (archive into the
    # archive bucket, s3 back end) leaves parts that are billed until they are aborted.
    uploaded_to = ["gas-results"] + (["gas-archive-objects"] if local.backend == "s3" else [])
    for state in (local.template_state(template()), local.state()):
        assert {b: state["buckets"][b]["AbortIncompleteUploadDays"] for b in uploaded_to} == {
            b: [1] for b in uploaded_to
        }


def kms_grants(resolved: Resolved) -> dict[str, list[dict[str, Any]]]:
    """Each role's statements that allow a KMS action, by role."""
    found: dict[str, list[dict[str, Any]]] = {}
    for name, resource in resolved.resources.items():
        if resource["Type"] != "AWS::IAM::Role":
            continue
        for policy in resource["Properties"].get("Policies", []):
            for statement in policy["PolicyDocument"]["Statement"]:
                if any(a.startswith("kms:") for a in statement["Action"]):
                    found.setdefault(name, []).append(statement)
    return found


DECRYPT, BOTH = ["kms:Decrypt"], ["kms:Decrypt", "kms:GenerateDataKey"]


@pytest.mark.parametrize(
    "backend, actions",
    [
        (
            "vault",
            {"RoleArchive": DECRYPT, "RoleThaw": BOTH, "RoleReconcile": BOTH, "RoleAnnLoad": BOTH},
        ),
        (
            "s3",
            {
                "RoleArchive": BOTH,
                "RoleRestore": DECRYPT,
                "RoleThaw": BOTH,
                "RoleReconcile": BOTH,
                "RoleAnnLoad": BOTH,
            },
        ),
    ],
)
def test_a_kms_key_arn_lets_each_role_use_the_key_through_s3(
    backend: str, actions: dict[str, list[str]]
) -> None:
    # Given a stack made with the customer-managed key of the buckets' default encryption
    granted = kms_grants(Resolved(template(), GasArchiveBackend=backend, KmsKeyArn=KEY))
    # Then each role may use that key, through S3 only, for what it does to objects
    assert granted == {
        role: [
            {
                "Sid": "KmsKey",
                "Effect": "Allow",
                "Action": role_actions,
                "Resource": KEY,
                "Condition": {"StringEquals": {"kms:ViaService": f"s3.{REGION}.amazonaws.com"}},
            }
        ]
        for role, role_actions in actions.items()
    }
    # And without one (the default), no role may use any key
    assert kms_grants(Resolved(template(), GasArchiveBackend=backend)) == {}


def test_the_kms_key_arn_is_a_key_arn_or_nothing() -> None:
    pattern = template()["Parameters"]["KmsKeyArn"]["AllowedPattern"]
    assert re.fullmatch(pattern, KEY) and re.fullmatch(pattern, "")
    assert not re.fullmatch(pattern, "alias/acme-s3")
    assert not re.fullmatch(pattern, "1234abcd-12ab-34cd-56ef-1234567890ab")


def delete_queue(local: Local) -> None:
    local.aws.client("sqs").delete_queue(QueueUrl=local.aws.queue_url("gas-restore"))


def delete_queue_policy(local: Local) -> None:
    local.aws.client("sqs").set_queue_attributes(
        QueueUrl=local.aws.queue_url("gas-thaw"), Attributes={"Policy": ""}
    )


def delete_notification(local: Local) -> None:
    local.aws.client("s3").put_bucket_notification_configuration(
        Bucket="gas-archive-objects", NotificationConfiguration={}
    )


def lengthen_visibility(local: Local) -> None:
    local.aws.client("sqs").set_queue_attributes(
        QueueUrl=local.aws.queue_url("gas-archive"), Attributes={"VisibilityTimeout": "300"}
    )


def version_results(local: Local) -> None:
    local.aws.client("s3").put_bucket_versioning(
        Bucket="gas-results", VersioningConfiguration={"Status": "Enabled"}
    )


def encrypt_results_with_a_customer_key(local: Local) -> None:
    key = local.aws.client("kms").create_key()["KeyMetadata"]["Arn"]
    local.aws.client("s3").put_bucket_encryption(
        Bucket="gas-results",
        ServerSideEncryptionConfiguration={
            "Rules": [
                {
                    "ApplyServerSideEncryptionByDefault": {
                        "SSEAlgorithm": "aws:kms",
                        "KMSMasterKeyID": key,
                    }
                }
            ]
        },
    )


@pytest.mark.parametrize("local", ["s3"], indirect=True)
@pytest.mark.parametrize(
    "change",
    [
        delete_queue,
        delete_queue_policy,
        delete_notification,
        lengthen_visibility,
        version_results,
        encrypt_results_with_a_customer_key,
    ],
    ids=lambda f: f.__name__,
)
def test_something_changed_on_the_local_stack_only_is_drift(
    local: Local, change: Callable[[Local], None]
) -> None:
    change(local)
    assert local.template_state(template()) != local.state()


@pytest.mark.parametrize("local", ["s3"], indirect=True)
@pytest.mark.parametrize(
    "removed",
    [
        ["QueueArchive"],
        ["DeadLetterQueueNotify", "QueueNotify.RedrivePolicy"],
        ["QueuePolicyThaw"],
        ["SubscriptionNotify"],
        ["TopicPolicyThaw"],
        ["BucketArchive.NotificationConfiguration"],
        ["BucketResults.LifecycleConfiguration"],
        ["BucketArchive.LifecycleConfiguration"],
        ["TableAnnotations.GlobalSecondaryIndexes"],
        ["SenderIdentity"],
    ],
    ids=lambda removed: removed[0],
)
def test_something_missing_from_the_template_is_drift(local: Local, removed: list[str]) -> None:
    damaged = copy.deepcopy(template())
    for path in removed:  # a resource, or one property of one
        resource, _, prop = path.partition(".")
        if prop:
            del damaged["Resources"][resource]["Properties"][prop]
        else:
            del damaged["Resources"][resource]
    assert local.template_state(damaged) != local.state()


FLEET_ON = {
    "Fleet": "true",
    "FleetRelease": "s3://acme-releases/gas-1.0.tar.gz",
    "FleetSubnets": "subnet-0123456789abcdef0",
}
ALARMS_ON = {"AlarmEmail": "ops@acme.example"}
FLEET_KINDS = {
    "AWS::EC2::LaunchTemplate",
    "AWS::AutoScaling::AutoScalingGroup",
    "AWS::AutoScaling::ScalingPolicy",
}
ALARM_KINDS = {"AWS::CloudWatch::Alarm", "AWS::CloudWatch::Dashboard"}


def test_cfn_lint_finds_nothing_with_the_fleet_and_the_alarms_on() -> None:
    # cfn-lint checks every resource whatever its Condition (gas.yaml: both off); given these
    # defaults it also checks the values a stack with both on is made with.
    on = template()
    for name, value in {**FLEET_ON, **ALARMS_ON}.items():
        on["Parameters"][name]["Default"] = value
    assert [str(match) for match in lint(yaml.safe_dump(on, sort_keys=False))] == []


def test_the_fleet_and_the_alarms_are_made_only_when_asked() -> None:
    def kinds(**parameters: str) -> set[str]:
        return {r["Type"] for r in Resolved(template(), **parameters).resources.values()}

    assert not kinds() & (FLEET_KINDS | ALARM_KINDS)
    assert FLEET_KINDS <= kinds(**FLEET_ON) and not kinds(**FLEET_ON) & ALARM_KINDS
    assert ALARM_KINDS <= kinds(**ALARMS_ON) and not kinds(**ALARMS_ON) & FLEET_KINDS


def metric(query: dict[str, Any]) -> tuple[str, str, dict[str, str]]:
    m = query["MetricStat"]["Metric"]
    return m["Namespace"], m["MetricName"], {d["Name"]: d["Value"] for d in m["Dimensions"]}


def test_each_worker_queue_scales_the_fleet_on_its_backlog_per_instance() -> None:
    # Given a stack with the fleet
    fleet = Resolved(template(), **FLEET_ON)
    made = {q["QueueName"] for q in fleet.of("AWS::SQS::Queue")}
    [group] = fleet.of("AWS::AutoScaling::AutoScalingGroup")
    # Then the group sends the metric the policies divide by (Auto Scaling's are opt-in)
    assert {"Granularity": "1Minute", "Metrics": ["GroupInServiceInstances"]} in group[
        "MetricsCollection"
    ]
    scaled = {}
    for policy in fleet.of("AWS::AutoScaling::ScalingPolicy"):
        assert policy["AutoScalingGroupName"] == "FleetGroup"
        assert policy["PolicyType"] == "TargetTrackingScaling"
        tracking = policy["TargetTrackingConfiguration"]
        queries = {q["Id"]: q for q in tracking["CustomizedMetricSpecification"]["Metrics"]}
        # And each tracks a queue it makes over the hosts in service, as AWS's example does
        namespace, name, dimensions = metric(queries["m1"])
        assert (namespace, name, set(dimensions)) == (
            "AWS/SQS",
            "ApproximateNumberOfMessagesVisible",
            {"QueueName"},
        )
        assert dimensions["QueueName"] in made
        assert metric(queries["m2"]) == (
            "AWS/AutoScaling",
            "GroupInServiceInstances",
            {"AutoScalingGroupName": "FleetGroup"},
        )
        assert queries["e1"]["Expression"] == "m1 / m2"
        assert [i for i, q in queries.items() if q["ReturnData"]] == ["e1"]
        assert float(tracking["TargetValue"]) >= 1
        scaled[dimensions["QueueName"]] = tracking["TargetValue"]
    # And every worker's queue has its policy
    config = load(None, utility_config_files())
    assert set(scaled) == {getattr(config, worker).queue for worker in WORKERS}


def user_data(resolved: Resolved) -> str:
    [launch] = resolved.of("AWS::EC2::LaunchTemplate")
    return launch["LaunchTemplateData"]["UserData"]


def test_a_new_release_replaces_the_hosts_one_at_a_time_each_signalling() -> None:
    group = template()["Resources"]["FleetGroup"]
    # The group follows the launch template's newest version, which a new release makes
    assert group["Properties"]["LaunchTemplate"]["Version"] == {
        "Fn::GetAtt": ["FleetLaunchTemplate", "LatestVersionNumber"]
    }
    first = user_data(Resolved(template(), **FLEET_ON))
    second = user_data(
        Resolved(template(), **{**FLEET_ON, "FleetRelease": "s3://acme-releases/gas-1.1.tar.gz"})
    )
    assert first != second and "'s3://acme-releases/gas-1.1.tar.gz'" in second
    # And CloudFormation replaces the hosts one at a time, waiting for each one's signal
    rolling = group["UpdatePolicy"]["AutoScalingRollingUpdate"]
    assert rolling["MaxBatchSize"] == 1 and rolling["WaitOnResourceSignals"] is True
    assert group["CreationPolicy"]["ResourceSignal"]["Count"] == {"Ref": "FleetMinSize"}
    # Which a host sends, success once its workers consume their queues, failure on any error
    assert "--resource FleetGroup" in first and "trap 'signal 1' ERR" in first
    assert first.rstrip().endswith("signal 0")


def test_a_host_installs_the_repositorys_units_and_the_stacks_settings_and_roles() -> None:
    resolved = Resolved(template(), **FLEET_ON)
    script = user_data(resolved)
    units = ROOT / "deploy" / "systemd"
    # The files it installs from the release are the repository's
    commands = script.replace("\\\n", "").splitlines()
    assert "cd /opt/gas/deploy/systemd" in commands
    installed = [f for c in commands if c.startswith("install -m 644") for f in c.split()[3:-1]]
    assert {"gas-worker@.service", "gas-reconcile.timer", "gas.sysusers.conf"} <= set(installed)
    assert [f for f in installed if not (units / f).is_file()] == []
    # And gas.env holds every setting the stack outputs, with the output's value
    env = dict(
        line.split("=", 1)
        for line in script.split("/etc/gas/gas.env <<'END'\n")[1].split("\nEND")[0].splitlines()
    )
    outputs = template()["Outputs"]
    settings = {
        o["Description"]: resolved.eval(o["Value"])
        for o in outputs.values()
        if o["Description"].startswith("GAS_")
    }
    assert {k: env[k] for k in settings} == settings
    assert env["GAS_METRICS_EMF"] == "stdout"  # the alarms' metrics
    # And each utility it runs as its own role
    for utility in [*WORKERS, "reconcile"]:
        role = f"arn:aws:iam::{ACCOUNT}:role/Role{utility.title()}"
        assert f"[profile gas-{utility}]\nrole_arn = {role}\n" in script
    assert "systemctl enable --now " + " ".join(f"gas-worker@{w}" for w in WORKERS) in script
    assert "systemctl enable --now gas-reconcile.timer" in script


def boom(message: Any) -> Any:
    raise RuntimeError("a bug")


def test_each_alarm_watches_a_queue_the_template_makes_or_a_metric_the_code_emits(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given what the code emits: every worker's handler raising once, and a sweep pass
    stack.config.metrics.emf = "stdout"
    stack.config.worker.wait_seconds = 0
    for worker in WORKERS:
        queue = getattr(stack.config, worker).queue
        stack.client("sqs").send_message(QueueUrl=stack.queue_url(queue), MessageBody="{}")
        Worker(worker, boom, stack.config, stack.aws, queue).work(once=True)
    Reconciler(stack.config, stack.aws, repair=False).run()
    emitted = {
        (m["namespace"], name, tuple(sorted(m["dimensions"].items())))
        for line in emf.lines(capsys.readouterr().out)
        for name, m in line.items()
    }
    # When the stack is made with the alarms
    resolved = Resolved(template(), **ALARMS_ON)
    queues = {q["QueueName"] for q in resolved.of("AWS::SQS::Queue")}
    watched = []
    for alarm in resolved.of("AWS::CloudWatch::Alarm"):
        dimensions = tuple(sorted((d["Name"], d["Value"]) for d in alarm["Dimensions"]))
        watched.append((alarm["Namespace"], alarm["MetricName"], dimensions))
        # Then each notifies the topic, and watches a queue the stack makes...
        assert alarm["AlarmActions"] == [Resolved.arn("sns", "AlarmTopic")]
        if alarm["Namespace"] == "AWS/SQS":
            [(name, queue)] = dimensions
            assert name == "QueueName" and queue in queues
        else:  # ...or a metric the code emits, by name, namespace and dimensions
            assert watched[-1] in emitted
    # And every queue's dead letters and age, every worker's errors and the sweep are watched
    sqs = [(m, q) for ns, m, ((_, q),) in [w for w in watched if w[0] == "AWS/SQS"]]
    assert sorted(q for m, q in sqs if m == "ApproximateNumberOfMessagesVisible") == sorted(
        q for q in queues if q.endswith("-dlq")
    )
    assert sorted(q for m, q in sqs if m == "ApproximateAgeOfOldestMessage") == sorted(
        q for q in queues if not q.endswith("-dlq")
    )
    assert {d for ns, m, d in watched if m == "UnexpectedErrors"} == {
        (("Utility", w),) for w in WORKERS
    }
    assert [m for ns, m, d in watched if d == (("Utility", "reconcile"),)] == ["FindingsLost"] * 2
    # And the topic e-mails the address given
    [topic] = [t for t in resolved.of("AWS::SNS::Topic") if "Subscription" in t]
    assert topic["Subscription"] == [{"Protocol": "email", "Endpoint": "ops@acme.example"}]


ALARM_FIELDS = (
    "AlarmName",
    "AlarmDescription",
    "Namespace",
    "MetricName",
    "Dimensions",
    "Statistic",
    "Period",
    "EvaluationPeriods",
    "DatapointsToAlarm",
    "Threshold",
    "ComparisonOperator",
    "TreatMissingData",
)


def alarm_shape(alarm: dict[str, Any]) -> dict[str, Any]:
    shape = {k: alarm.get(k) for k in ALARM_FIELDS}
    shape["Threshold"] = float(shape["Threshold"])  # a Number parameter's Ref is its text
    return shape


def test_the_template_makes_the_alarms_the_local_stack_makes(stack: Stack) -> None:
    local = stack.client("cloudwatch").describe_alarms()["MetricAlarms"]
    made = Resolved(template(), **ALARMS_ON).of("AWS::CloudWatch::Alarm")
    assert sorted(map(alarm_shape, made), key=str) == sorted(map(alarm_shape, local), key=str)


def test_the_capacity_table_gives_the_templates_targets() -> None:
    page = (ROOT / "docs" / "deploy.md").read_text()
    table = page.split("### Capacity")[1].split("\n## ")[0]
    rows = {
        cells[0]: cells[-1]
        for line in table.splitlines()
        if line.startswith("| ")
        for cells in [[c.strip() for c in line.strip("|").split("|")]]
    }
    defaults = template()["Parameters"]
    assert {w: rows[w] for w in WORKERS} == {
        w: defaults[f"Fleet{w.title()}Backlog"]["Default"] for w in WORKERS
    }
