"""A function's environment variables, every stack reference resolved to an emulator resource.

The template's variables hold references (``Ref``, ``Fn::GetAtt``, ``Fn::Join``,
``Fn::Sub``, ``Fn::Select``) to resources of the stack. Each referenced resource is
created on the emulator the first time it is referenced, from its template properties,
by type:

- ``AWS::SNS::Topic``, ``AWS::SQS::Queue`` (Ref: URL; GetAtt Arn: ARN), ``AWS::S3::Bucket``,
  ``AWS::KMS::Key``, ``AWS::SSM::Parameter``, ``AWS::SES::ConfigurationSet``;
- ``AWS::DynamoDB::Table``: its key schema, attributes, indexes and TTL (no stream);
- ``AWS::SecretsManager::Secret``: a placeholder value (48 random characters, or the JSON
  its GenerateSecretString describes); a secret named by a variable with ``WEBHOOK`` in
  its name holds the URL of the local webhook stand-in instead;
- ``AWS::SES::EmailIdentity``, and every SES identity the function's role may send as (named
  in its resources, or the From address its ``ses:FromAddress`` condition pins): created,
  so that moto accepts mail from it;
- ``AWS::Lambda::Function``, ``Alias``, ``Version`` and ``AWS::IAM::Role``: names and ARNs
  only (local invoke runs functions itself; the Lambda stand-in finds them by name).

A secret ARN that is not a stack resource (``Secret.from_secret_name_v2``) gets a secret
of that name. Anything else is a one-line LocalError naming the function, the variable
and what it refers to. Creating is idempotent: a resource that exists is reused, so a
running emulator can be resolved against again.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from opskit_local.catalog import LocalFunction
from opskit_local.errors import LocalError

ACCOUNT_ID = "123456789012"
_SECRET_ARN = re.compile(r"^arn:aws[\w-]*:secretsmanager:[^:]+:\d{12}:secret:(.+)$")
_SES_IDENTITY = re.compile(r"^arn:aws[\w-]*:ses:[^:]+:\d{12}:identity/([^*]+)$")
_SUB = re.compile(r"\$\{([^}!][^}]*)\}")

Clients = Callable[[str], Any]


@dataclass(frozen=True)
class Where:
    """The variable being resolved, for error messages and the webhook rule."""

    function: str
    variable: str

    def error(self, what: str) -> LocalError:
        return LocalError(f"{self.function}: {self.variable} {what}")


class Resolver:
    """Resolves references of one template against one emulator, creating what they name."""

    def __init__(
        self,
        template: Mapping[str, Any],
        *,
        clients: Clients,
        region: str,
        stack_name: str,
        webhook_url: str,
    ) -> None:
        self.resources: Mapping[str, Any] = template.get("Resources") or {}
        self.parameters: Mapping[str, Any] = template.get("Parameters") or {}
        self.clients = clients
        self.region = region
        self.stack_name = stack_name
        self.webhook_url = webhook_url
        self._made: dict[str, dict[str, str]] = {}
        self._clients: dict[str, Any] = {}
        self.imported_secrets: dict[str, str] = {}
        """Secrets named by ARN rather than as stack resources: name -> ARN on the emulator."""

    @property
    def made(self) -> Mapping[str, dict[str, str]]:
        """The attributes of every resource created so far, by logical id."""
        return self._made

    def client(self, service: str) -> Any:
        if service not in self._clients:
            self._clients[service] = self.clients(service)
        return self._clients[service]

    def environment(self, function: LocalFunction) -> dict[str, str]:
        """The function's variables, resolved; creates the resources they name."""
        resolved = {}
        for variable, value in function.variables.items():
            where = Where(function.name, variable)
            resolved[variable] = self.value(value, where)
            secret = _SECRET_ARN.match(resolved[variable])
            if secret is not None:
                self.imported_secrets[secret[1]] = self._secret(secret[1], {}, where)
        for identity in self._ses_identities(function):
            self._email_identity(identity)
        return resolved

    def physical_name(self, logical_id: str, limit: int = 64) -> str:
        """The name CloudFormation would generate, without its random suffix."""
        return f"{self.stack_name}-{logical_id}"[:limit]

    def function_arn(self, name: str) -> str:
        return f"arn:aws:lambda:{self.region}:{ACCOUNT_ID}:function:{name}"

    # --- intrinsic functions -------------------------------------------------------------

    def value(self, node: Any, where: Where) -> str:
        if isinstance(node, str):
            return node
        if isinstance(node, bool):
            return "true" if node else "false"
        if isinstance(node, int | float):
            return str(node)
        if isinstance(node, dict) and len(node) == 1:
            (intrinsic, argument), *_ = node.items()
            if intrinsic == "Ref":
                return self.ref(argument, where)
            if intrinsic == "Fn::GetAtt":
                logical_id, attribute = (
                    argument if isinstance(argument, list) else str(argument).split(".", 1)
                )
                return self.attribute(logical_id, attribute, where)
            if intrinsic == "Fn::Join":
                separator, parts = argument
                return str(separator).join(self.value(part, where) for part in parts)
            if intrinsic == "Fn::Sub":
                return self._sub(argument, where)
            if intrinsic == "Fn::Select":
                index, items = argument
                chosen = self._list(items, where)[int(self.value(index, where))]
                return self.value(chosen, where)
            raise where.error(f"uses {intrinsic}, which local invoke does not evaluate")
        raise where.error(f"has a value local invoke cannot read: {json.dumps(node)[:80]}")

    def _list(self, node: Any, where: Where) -> list[Any]:
        if isinstance(node, list):
            return node
        if isinstance(node, dict) and "Fn::Split" in node:
            separator, text = node["Fn::Split"]
            return self.value(text, where).split(separator)
        raise where.error(f"selects from {json.dumps(node)[:80]}, which is not a list")

    def _sub(self, argument: Any, where: Where) -> str:
        text, variables = (argument, {}) if isinstance(argument, str) else argument

        def replace(found: re.Match[str]) -> str:
            name = found[1]
            if name in variables:
                return self.value(variables[name], where)
            if "." in name and not name.startswith("AWS::"):
                logical_id, attribute = name.split(".", 1)
                return self.attribute(logical_id, attribute, where)
            return self.ref(name, where)

        return _SUB.sub(replace, text).replace("${!", "${")

    def ref(self, name: str, where: Where) -> str:
        pseudo = {
            "AWS::Region": self.region,
            "AWS::AccountId": ACCOUNT_ID,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::StackName": self.stack_name,
            "AWS::StackId": f"arn:aws:cloudformation:{self.region}:{ACCOUNT_ID}:stack/"
            f"{self.stack_name}/00000000-0000-0000-0000-000000000000",
        }
        if name in pseudo:
            return pseudo[name]
        if name in self.parameters:
            default = self.parameters[name].get("Default")
            if default is None:
                raise where.error(f"refers to parameter {name}, which has no default")
            return str(default)
        return self.attribute(name, "Ref", where)

    def attribute(self, logical_id: str, attribute: str, where: Where) -> str:
        made = self.make(logical_id, where)
        if attribute not in made:
            kind = self.resources[logical_id]["Type"]
            raise where.error(
                f"refers to {attribute} of {kind} {logical_id}, which local invoke does not"
                f" stand in for (it has {', '.join(sorted(made))})"
            )
        return made[attribute]

    # --- resources -----------------------------------------------------------------------

    def make(self, logical_id: str, where: Where) -> dict[str, str]:
        """The attributes of the resource, created on the emulator on first use."""
        if logical_id in self._made:
            return self._made[logical_id]
        resource = self.resources.get(logical_id)
        if resource is None:
            raise where.error(f"refers to {logical_id}, which the template does not have")
        kind = resource.get("Type")
        maker = _MAKERS.get(kind)
        if maker is None:
            raise where.error(
                f"refers to {kind} {logical_id}, which the local emulator cannot stand in for"
            )
        properties = resource.get("Properties") or {}
        self._made[logical_id] = maker(self, logical_id, properties, where)
        return self._made[logical_id]

    def _name(
        self, properties: Mapping[str, Any], key: str, logical_id: str, where: Where, *, limit: int
    ) -> str:
        if key in properties:
            return self.value(properties[key], where)
        return self.physical_name(logical_id, limit)

    def _topic(
        self, logical_id: str, properties: Mapping[str, Any], where: Where
    ) -> dict[str, str]:
        fifo = bool(properties.get("FifoTopic"))
        name = self._name(properties, "TopicName", logical_id, where, limit=251)
        if fifo and not name.endswith(".fifo"):
            name += ".fifo"
        attributes = {"FifoTopic": "true"} if fifo else {}
        arn = self.client("sns").create_topic(Name=name, Attributes=attributes)["TopicArn"]
        return {"Ref": arn, "TopicArn": arn, "TopicName": name}

    def _queue(
        self, logical_id: str, properties: Mapping[str, Any], where: Where
    ) -> dict[str, str]:
        fifo = bool(properties.get("FifoQueue"))
        name = self._name(properties, "QueueName", logical_id, where, limit=75)
        if fifo and not name.endswith(".fifo"):
            name += ".fifo"
        sqs = self.client("sqs")
        url = sqs.create_queue(QueueName=name, Attributes={"FifoQueue": "true"} if fifo else {})[
            "QueueUrl"
        ]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        return {"Ref": url, "QueueUrl": url, "Arn": arn, "QueueName": name}

    def _table(
        self, logical_id: str, properties: Mapping[str, Any], where: Where
    ) -> dict[str, str]:
        name = self._name(properties, "TableName", logical_id, where, limit=255)
        dynamodb = self.client("dynamodb")
        definition: dict[str, Any] = {
            "TableName": name,
            "BillingMode": "PAY_PER_REQUEST",
            "KeySchema": properties["KeySchema"],
            "AttributeDefinitions": properties["AttributeDefinitions"],
        }
        for key in ("GlobalSecondaryIndexes", "LocalSecondaryIndexes"):
            indexes = properties.get(key)
            if indexes:
                definition[key] = [
                    {
                        k: v
                        for k, v in index.items()
                        if k in ("IndexName", "KeySchema", "Projection")
                    }
                    for index in indexes
                ]
        try:
            arn = dynamodb.create_table(**definition)["TableDescription"]["TableArn"]
        except dynamodb.exceptions.ResourceInUseException:
            arn = dynamodb.describe_table(TableName=name)["Table"]["TableArn"]
        ttl = properties.get("TimeToLiveSpecification") or {}
        if ttl.get("Enabled"):
            dynamodb.update_time_to_live(
                TableName=name,
                TimeToLiveSpecification={"Enabled": True, "AttributeName": ttl["AttributeName"]},
            )
        return {"Ref": name, "Arn": arn}

    def _secret_resource(
        self, logical_id: str, properties: Mapping[str, Any], where: Where
    ) -> dict[str, str]:
        name = self._name(properties, "Name", logical_id, where, limit=512)
        arn = self._secret(name, properties, where)
        return {"Ref": arn, "Id": arn}

    def _secret(self, name: str, properties: Mapping[str, Any], where: Where) -> str:
        manager = self.client("secretsmanager")
        try:
            return str(manager.describe_secret(SecretId=name)["ARN"])
        except manager.exceptions.ResourceNotFoundException:
            pass
        return str(
            manager.create_secret(Name=name, SecretString=self._placeholder(properties, where))[
                "ARN"
            ]
        )

    def _placeholder(self, properties: Mapping[str, Any], where: Where) -> str:
        if "WEBHOOK" in where.variable.upper():
            return self.webhook_url
        if "SecretString" in properties:
            return self.value(properties["SecretString"], where)
        generate = properties.get("GenerateSecretString") or {}
        value = secrets.token_urlsafe(36)
        if generate.get("SecretStringTemplate") and generate.get("GenerateStringKey"):
            document = json.loads(generate["SecretStringTemplate"])
            document[generate["GenerateStringKey"]] = value
            return json.dumps(document)
        return value

    def _key(self, logical_id: str, properties: Mapping[str, Any], where: Where) -> dict[str, str]:
        key = self.client("kms").create_key(Description=f"{self.stack_name} {logical_id}")
        metadata = key["KeyMetadata"]
        return {"Ref": metadata["KeyId"], "KeyId": metadata["KeyId"], "Arn": metadata["Arn"]}

    def _bucket(
        self, logical_id: str, properties: Mapping[str, Any], where: Where
    ) -> dict[str, str]:
        name = self._name(properties, "BucketName", logical_id, where, limit=63).lower()
        s3 = self.client("s3")
        location = {} if self.region == "us-east-1" else {"LocationConstraint": self.region}
        with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
            s3.create_bucket(
                Bucket=name, **({"CreateBucketConfiguration": location} if location else {})
            )
        return {
            "Ref": name,
            "Arn": f"arn:aws:s3:::{name}",
            "DomainName": f"{name}.s3.amazonaws.com",
        }

    def _parameter(
        self, logical_id: str, properties: Mapping[str, Any], where: Where
    ) -> dict[str, str]:
        name = self._name(properties, "Name", logical_id, where, limit=1011)
        value = self.value(properties.get("Value", ""), where)
        kind = properties.get("Type", "String")
        self.client("ssm").put_parameter(Name=name, Value=value, Type=kind, Overwrite=True)
        return {"Ref": name, "Type": kind, "Value": value}

    def _configuration_set(
        self, logical_id: str, properties: Mapping[str, Any], where: Where
    ) -> dict[str, str]:
        name = self._name(properties, "Name", logical_id, where, limit=64)
        sesv2 = self.client("sesv2")
        with contextlib.suppress(sesv2.exceptions.AlreadyExistsException):
            sesv2.create_configuration_set(ConfigurationSetName=name)
        return {"Ref": name}

    def _identity_resource(
        self, logical_id: str, properties: Mapping[str, Any], where: Where
    ) -> dict[str, str]:
        identity = self.value(properties["EmailIdentity"], where)
        self._email_identity(identity)
        return {"Ref": identity}

    def _email_identity(self, identity: str) -> None:
        sesv2 = self.client("sesv2")
        with contextlib.suppress(sesv2.exceptions.AlreadyExistsException):
            sesv2.create_email_identity(EmailIdentity=identity)

    def _function(
        self, logical_id: str, properties: Mapping[str, Any], where: Where
    ) -> dict[str, str]:
        name = self._name(properties, "FunctionName", logical_id, where, limit=64)
        return {"Ref": name, "Arn": self.function_arn(name)}

    def _alias(
        self, logical_id: str, properties: Mapping[str, Any], where: Where
    ) -> dict[str, str]:
        function = self.value(properties["FunctionName"], where)
        arn = function if function.startswith("arn:") else self.function_arn(function)
        alias = self.value(properties["Name"], where)
        return {"Ref": f"{arn}:{alias}", "AliasArn": f"{arn}:{alias}"}

    def _version(
        self, logical_id: str, properties: Mapping[str, Any], where: Where
    ) -> dict[str, str]:
        function = self.value(properties["FunctionName"], where)
        arn = function if function.startswith("arn:") else self.function_arn(function)
        return {"Ref": f"{arn}:1", "Version": "1", "FunctionArn": arn}

    def _role(self, logical_id: str, properties: Mapping[str, Any], where: Where) -> dict[str, str]:
        name = self._name(properties, "RoleName", logical_id, where, limit=64)
        arn = f"arn:aws:iam::{ACCOUNT_ID}:role/{name}"
        return {"Ref": name, "Arn": arn, "RoleId": f"AROA{logical_id.upper()[:17]}"}

    def _ses_identities(self, function: LocalFunction) -> list[str]:
        """SES identities the function's role may send as (inline policies of its role): those
        its resources name, and the From address its `ses:FromAddress` condition pins."""
        role = (
            function.role.get("Fn::GetAtt", [None])[0] if isinstance(function.role, dict) else None
        )
        found = []
        for resource in self.resources.values():
            properties = resource.get("Properties") or {}
            if resource.get("Type") != "AWS::IAM::Policy" or {"Ref": role} not in (
                properties.get("Roles") or []
            ):
                continue
            for statement in properties.get("PolicyDocument", {}).get("Statement", []):
                actions = statement.get("Action")
                actions = actions if isinstance(actions, list) else [actions]
                if not any(str(action).startswith("ses:") for action in actions):
                    continue
                resources = statement.get("Resource")
                for arn in resources if isinstance(resources, list) else [resources]:
                    try:
                        text = self.value(arn, Where(function.name, "its role's SES policy"))
                    except LocalError:
                        continue
                    identity = _SES_IDENTITY.match(text)
                    if identity is not None:
                        found.append(identity[1])
                senders = (statement.get("Condition") or {}).get("StringEquals", {})
                sender = senders.get("ses:FromAddress")
                found += sender if isinstance(sender, list) else [sender] if sender else []
        return found


_MAKERS: dict[str, Callable[[Resolver, str, Mapping[str, Any], Where], dict[str, str]]] = {
    "AWS::SNS::Topic": Resolver._topic,
    "AWS::SQS::Queue": Resolver._queue,
    "AWS::DynamoDB::Table": Resolver._table,
    "AWS::SecretsManager::Secret": Resolver._secret_resource,
    "AWS::KMS::Key": Resolver._key,
    "AWS::S3::Bucket": Resolver._bucket,
    "AWS::SSM::Parameter": Resolver._parameter,
    "AWS::SES::ConfigurationSet": Resolver._configuration_set,
    "AWS::SES::EmailIdentity": Resolver._identity_resource,
    "AWS::Lambda::Function": Resolver._function,
    "AWS::Lambda::Alias": Resolver._alias,
    "AWS::Lambda::Version": Resolver._version,
    "AWS::IAM::Role": Resolver._role,
}
