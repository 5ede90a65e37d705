"""The user service's front door: a Cognito user pool and the REST API in front of the handler.

Routes, declared parameters and body models come from the handler's OpenAPI document
(`openapi.py`). Every method needs a Cognito ID token; CORS preflights are answered by
API Gateway itself; responses API Gateway makes on its own (401, 403, 429, a body that
fails its model, 5xx) are written in the handler's error format.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

from aws_cdk import CfnOutput, Duration, RemovalPolicy, Stack
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_cognito as cognito
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_wafv2 as wafv2
from constructs import Construct

from opskit.constructs import encrypted
from opskit.constructs.compliance import acknowledge, acknowledge_wildcard_resources
from opskit.constructs.user_service import openapi
from opskit.constructs.user_service.firewall import ApiFirewall, StageFirewall
from opskit.errors import PropsError
from opskit.profile import EnvironmentProfile

CORS_ALLOW_HEADERS = ("Authorization", "Content-Type", "X-Request-ID")
"""The same headers the handler names in its own preflight answers (api.CORS_ALLOW_HEADERS)."""
CORS_EXPOSE_HEADERS = "X-Request-ID,x-amzn-RequestId"
CORS_MAX_AGE = Duration.seconds(600)
ORIGIN = re.compile(r"^https?://[A-Za-z0-9.-]+(:\d{1,5})?$")
"""A browser origin: scheme, host, optional port; no path, no trailing slash."""

ACCESS_LOG_FORMAT = {
    "requestId": "$context.requestId",
    "requestTime": "$context.requestTime",
    "ip": "$context.identity.sourceIp",
    "userAgent": "$context.identity.userAgent",
    "caller": "$context.authorizer.claims.sub",
    "httpMethod": "$context.httpMethod",
    "resourcePath": "$context.resourcePath",
    "path": "$context.path",
    "status": "$context.status",
    "protocol": "$context.protocol",
    "responseLength": "$context.responseLength",
    "responseLatency": "$context.responseLatency",
    "integrationLatency": "$context.integrationLatency",
    "integrationStatus": "$context.integrationStatus",
    "errorType": "$context.error.responseType",
    "errorMessage": "$context.error.message",
    "authorizerError": "$context.authorizer.error",
    "waf": "$context.wafResponseCode",
    "wafStatus": "$context.waf.status",
    "xrayTraceId": "$context.xrayTraceId",
}
"""One JSON object per request. Addresses and names never appear (they are in bodies and
queries, which this leaves out); `caller` is the Cognito user's opaque `sub`."""

_ERROR_BODY = '{{"error": {error}, "details": {details}, "request_id": "$context.requestId"}}'


@dataclass(frozen=True)
class ApiThrottling:
    """Steady-state requests per second and burst for every method of the stage."""

    rate_limit: float = 100
    burst_limit: int = 200

    def problem(self) -> str | None:
        if not 0 < self.rate_limit <= 10_000 or not 0 < self.burst_limit <= 5_000:
            return (
                "throttling must be 0 < rate_limit <= 10000 and 0 < burst_limit <= 5000 "
                f"(the account's regional quotas), got {self}"
            )
        return None


@dataclass(frozen=True)
class _GatewayError:
    type: apigw.ResponseType
    status: str
    error: str
    """A JSON string literal, or `$context.error.messageString` (API Gateway's own, quoted)."""
    details: str = "[]"


GATEWAY_ERRORS = (
    _GatewayError(apigw.ResponseType.UNAUTHORIZED, "401", '"unauthorized"'),
    _GatewayError(apigw.ResponseType.ACCESS_DENIED, "403", '"forbidden"'),
    _GatewayError(apigw.ResponseType.THROTTLED, "429", '"too many requests"'),
    _GatewayError(
        apigw.ResponseType.BAD_REQUEST_BODY,
        "400",
        '"request body does not match the model"',
        '[{"field": "body", "message": "see the API\'s request models (openapi.json)"}]',
    ),
    _GatewayError(apigw.ResponseType.MISSING_AUTHENTICATION_TOKEN, "404", '"no such resource"'),
    _GatewayError(apigw.ResponseType.DEFAULT_4_XX, "", "$context.error.messageString"),
    _GatewayError(apigw.ResponseType.DEFAULT_5_XX, "", "$context.error.messageString"),
)
"""What API Gateway answers before the handler runs, in the handler's error format. API
Gateway answers an unknown path, or an unknown method on a known one, as a missing
authentication token (403): here it is the handler's 404 for an unknown path."""


def validated_origins(
    origins: Sequence[str], *, profile: EnvironmentProfile, where: str
) -> tuple[str, ...]:
    """The allowed origins, or PropsError naming the first one that cannot be."""
    for origin in origins:
        if origin == "*":
            if not profile.allow_wildcard_cors:
                raise PropsError(
                    f"{where}: allowed origin '*' is refused by profile {profile.name!r} "
                    "(allow_wildcard_cors); list the origins"
                )
            if len(origins) > 1:
                raise PropsError(f"{where}: allowed origin '*' cannot be listed with others")
        elif not ORIGIN.match(origin):
            raise PropsError(
                f"{where}: allowed origin {origin!r} is not scheme://host[:port] "
                "(no path, no trailing slash)"
            )
    if len(set(origins)) != len(origins):
        raise PropsError(f"{where}: allowed origins list one more than once")
    return tuple(origins)


API_FLAGS = (
    "@aws-cdk/aws-apigateway:authorizerChangeDeploymentLogicalId",
    "@aws-cdk/aws-apigateway:logGroupDestinationArnWithoutWildcard",
)
"""CDK feature flags the API needs, whatever the app sets: without the first (apps made
before CDK 2.66 lack it) a changed authorizer makes no new deployment, so the stage keeps
trusting the old user pool; without the second the access-log destination always drifts."""


class UserApi(Construct):
    """The REST API (`api`, stage `stage` named after the environment) with a Cognito user
    pool authorizer on every method, request validation, access and execution logs,
    tracing, metrics and throttling; and the user pool with its app client when none is
    given.

    Execution logging needs the account's API Gateway CloudWatch role, an account- and
    region-wide setting that a fresh account lacks (the stage then fails to deploy). With
    `manage_account_logging_role`, this construct sets it (`account`), to a role that may
    write the logs of every REST API of the account and region, as AWS's managed policy
    for it does: the setting is shared, and a narrower role would break other APIs'
    logging. That role is kept when the stack is deleted, so the setting never points at a
    deleted role.
    """

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        profile: EnvironmentProfile,
        handler: lambda_.IFunction,
        allowed_origins: Sequence[str],
        throttling: ApiThrottling,
        user_pool: cognito.IUserPool | None,
        mfa: cognito.Mfa,
        self_sign_up: bool,
        user_pool_email: cognito.UserPoolEmail | None,
        feature_plan: cognito.FeaturePlan,
        manage_account_logging_role: bool,
        execution_log_level: apigw.MethodLoggingLevel | None,
        web_acl_arn: str | None,
        firewall: ApiFirewall | None,
        api_name: str | None,
    ) -> None:
        super().__init__(scope, id)
        for flag in API_FLAGS:
            self.node.set_context(flag, True)
        self.profile = profile
        self.allowed_origins = tuple(allowed_origins)
        self.user_pool_client: cognito.UserPoolClient | None = None
        self.user_pool = user_pool or self._user_pool(
            mfa=mfa, self_sign_up=self_sign_up, email=user_pool_email, feature_plan=feature_plan
        )

        self.access_log_group = encrypted.log_group(self, "AccessLogs", profile=profile)
        self.api = apigw.RestApi(
            self,
            "Api",
            rest_api_name=api_name or f"{Stack.of(self).stack_name}-users",
            description=f"opskit user service ({profile.name})",
            endpoint_types=[apigw.EndpointType.REGIONAL],
            cloud_watch_role=False,
            deploy=True,
            deploy_options=apigw.StageOptions(
                stage_name=profile.name,
                access_log_destination=apigw.LogGroupLogDestination(self.access_log_group),
                access_log_format=apigw.AccessLogFormat.custom(
                    json.dumps(ACCESS_LOG_FORMAT, separators=(",", ":"))
                ),
                logging_level=execution_log_level
                or (
                    apigw.MethodLoggingLevel.INFO
                    if profile.api_data_tracing
                    else apigw.MethodLoggingLevel.ERROR
                ),
                data_trace_enabled=profile.api_data_tracing,
                tracing_enabled=profile.tracing,
                metrics_enabled=True,
                throttling_rate_limit=throttling.rate_limit,
                throttling_burst_limit=throttling.burst_limit,
            ),
        )
        self.stage = self.api.deployment_stage
        self.execution_log_group = self._execution_log_group()
        self.account_logging_role: iam.Role | None = None
        self.account: apigw.CfnAccount | None = None
        if manage_account_logging_role:
            self._account_logging_role()
        self._acknowledge_stage(guarded=web_acl_arn is not None or firewall is not None)

        self.authorizer = apigw.CognitoUserPoolsAuthorizer(
            self,
            "Authorizer",
            cognito_user_pools=[self.user_pool],
            authorizer_name="users-cognito",  # CDK's default name follows the construct path
        )
        self.validator = apigw.RequestValidator(
            self,
            "Validator",
            rest_api=self.api,
            validate_request_body=True,
            validate_request_parameters=True,
        )
        self.methods: dict[str, apigw.Method] = {}
        self._routes(apigw.LambdaIntegration(handler, proxy=True, allow_test_invoke=False))
        self._redeploy_when_replaced(handler)
        self._gateway_responses()
        if web_acl_arn is not None:
            wafv2.CfnWebACLAssociation(
                self, "WebAcl", resource_arn=self.stage.stage_arn, web_acl_arn=web_acl_arn
            )
        self.firewall = (
            StageFirewall(
                self,
                "Firewall",
                stage=self.stage,
                settings=firewall,
                response_headers=self.error_headers(),
            )
            if firewall is not None
            else None
        )

    # --- Cognito ----------------------------------------------------------------------

    def _user_pool(
        self,
        *,
        mfa: cognito.Mfa,
        self_sign_up: bool,
        email: cognito.UserPoolEmail | None,
        feature_plan: cognito.FeaturePlan,
    ) -> cognito.UserPool:
        """E-mail sign-in (case-insensitive) and verification, a strong password policy, MFA
        by app (TOTP). Sign-in attributes, case sensitivity and required attributes are
        fixed when the pool is created: changing them later replaces the pool and its users.
        The app client is kept with the pool: apps that sign in hold its id, and a pool
        kept when the service moves to a pool of its own would otherwise lose it.
        """
        pool = cognito.UserPool(
            self,
            "UserPool",
            sign_in_aliases=cognito.SignInAliases(email=True),
            sign_in_case_sensitive=False,
            auto_verify=cognito.AutoVerifiedAttrs(email=True),
            keep_original=cognito.KeepOriginalAttrs(email=True),
            standard_attributes=cognito.StandardAttributes(
                email=cognito.StandardAttribute(required=True, mutable=True)
            ),
            self_sign_up_enabled=self_sign_up,
            account_recovery=cognito.AccountRecovery.EMAIL_ONLY,
            password_policy=cognito.PasswordPolicy(
                min_length=8,
                require_lowercase=True,
                require_uppercase=True,
                require_digits=True,
                require_symbols=True,
                temp_password_validity=Duration.days(3),
            ),
            mfa=mfa,
            mfa_second_factor=cognito.MfaSecondFactor(otp=True, sms=False),
            email=email,
            feature_plan=feature_plan,
            standard_threat_protection_mode=(
                cognito.StandardThreatProtectionMode.FULL_FUNCTION
                if feature_plan == cognito.FeaturePlan.PLUS
                else None
            ),
            deletion_protection=self.profile.deletion_protection,
            removal_policy=self.profile.removal_policy,
        )
        if mfa != cognito.Mfa.REQUIRED:
            acknowledge(
                pool,
                "AwsSolutions-COG2",
                "MFA (an authenticator app) is optional by design: each user may turn it on. "
                "Pass mfa=REQUIRED when creating the pool; CloudFormation cannot require it "
                "on an existing one",
            )
        if feature_plan != cognito.FeaturePlan.PLUS:
            acknowledge(
                pool,
                "AwsSolutions-COG8",
                "Threat protection needs the paid Plus feature plan; pass "
                "feature_plan=PLUS to turn it on (full function)",
            )
        self.user_pool_client = pool.add_client(
            "AppClient",
            generate_secret=False,
            auth_flows=cognito.AuthFlow(user_srp=True),
            disable_o_auth=True,
            prevent_user_existence_errors=True,
            enable_token_revocation=True,
            id_token_validity=Duration.hours(1),
            access_token_validity=Duration.hours(1),
            refresh_token_validity=Duration.days(30),
        )
        self.user_pool_client.apply_removal_policy(self.profile.removal_policy)
        CfnOutput(self, "UserPoolId", value=pool.user_pool_id)
        CfnOutput(self, "UserPoolClientId", value=self.user_pool_client.user_pool_client_id)
        return pool

    # --- logging ----------------------------------------------------------------------

    def _execution_log_group(self) -> logs.LogGroup:
        """API Gateway writes execution logs to a group it names after the API and stage, and
        creates it itself, unencrypted and kept forever, unless it exists: it does, first."""
        group = encrypted.log_group(self, "ExecutionLogs", profile=self.profile)
        resource = group.node.default_child
        assert isinstance(resource, logs.CfnLogGroup)
        resource.log_group_name = (
            f"API-Gateway-Execution-Logs_{self.api.rest_api_id}/{self.profile.name}"
        )
        self.stage.node.add_dependency(group)
        return group

    def _account_logging_role(self) -> None:
        stack = Stack.of(self)
        account_logs = f"arn:{stack.partition}:logs:{stack.region}:{stack.account}:*"
        self.account_logging_role = iam.Role(
            self,
            "AccountLoggingRole",
            assumed_by=iam.ServicePrincipal("apigateway.amazonaws.com"),
            description="API Gateway's CloudWatch Logs role for this account and region",
            inline_policies={
                "PushToCloudWatchLogs": iam.PolicyDocument(
                    statements=[
                        iam.PolicyStatement(
                            actions=[
                                "logs:CreateLogGroup",
                                "logs:CreateLogStream",
                                "logs:DescribeLogGroups",
                                "logs:DescribeLogStreams",
                                "logs:PutLogEvents",
                                "logs:GetLogEvents",
                                "logs:FilterLogEvents",
                            ],
                            resources=[account_logs],
                        )
                    ]
                )
            },
        )
        self.account_logging_role.apply_removal_policy(RemovalPolicy.RETAIN)
        acknowledge_wildcard_resources(
            self.account_logging_role,
            [account_logs],
            "The account's API Gateway logging role writes the logs of every REST API in this "
            "account and region (as AWS's AmazonAPIGatewayPushToCloudWatchLogs does); scoping "
            "it to this API would break the logging of the others",
        )
        self.account = apigw.CfnAccount(
            self, "Account", cloud_watch_role_arn=self.account_logging_role.role_arn
        )
        self.stage.node.add_dependency(self.account)

    def _acknowledge_stage(self, *, guarded: bool) -> None:
        stage = self.stage
        if not guarded:
            acknowledge(
                stage,
                "AwsSolutions-APIG3",
                "No AWS WAF web ACL unless web_acl_arn or firewall is given: Cognito "
                "authorizes every method and the stage throttles; a web ACL costs per rule and "
                "request",
            )
        acknowledge(
            stage,
            "CKV_AWS_120",
            "Responses are per user and change on every write; caching would serve stale or "
            "another caller's data",
        )

    # --- routes -----------------------------------------------------------------------

    def _routes(self, integration: apigw.LambdaIntegration) -> None:
        document = openapi.load()
        schemas = document["components"]["schemas"]
        models: dict[str, apigw.Model] = {}
        resources: dict[str, apigw.IResource] = {"/": self.api.root}
        allowed_methods: dict[str, list[str]] = {}
        for operation in openapi.operations(document):
            resource = self._resource(resources, operation.path)
            model = None
            if operation.body_model is not None:
                name = operation.body_model
                if name not in models:
                    models[name] = self.api.add_model(
                        f"{name}Model",
                        content_type="application/json",
                        model_name=name,
                        schema=openapi.json_schema(schemas[name], where=name),
                    )
                model = models[name]
            self.methods[f"{operation.method} {operation.path}"] = resource.add_method(
                operation.method,
                integration,
                operation_name=operation.operation_id,
                authorizer=self.authorizer,
                authorization_type=apigw.AuthorizationType.COGNITO,
                request_validator=self.validator,
                request_parameters=dict(operation.parameters) or None,
                request_models={"application/json": model} if model else None,
            )
            allowed_methods.setdefault(operation.path, []).append(operation.method)
        if self.allowed_origins:
            for path, verbs in allowed_methods.items():
                self._preflight(resources[path], verbs)

    def _resource(self, resources: dict[str, apigw.IResource], path: str) -> apigw.IResource:
        if path not in resources:
            parent, _, part = path.rpartition("/")
            resources[path] = self._resource(resources, parent or "/").add_resource(part)
        return resources[path]

    def _preflight(self, resource: apigw.IResource, verbs: Sequence[str]) -> None:
        """Browsers send a preflight without credentials, so it needs no token; API Gateway
        answers it from a mock integration and nothing reaches the function."""
        resource.add_cors_preflight(
            allow_origins=list(self.allowed_origins),
            allow_methods=[*verbs, "OPTIONS"],
            allow_headers=list(CORS_ALLOW_HEADERS),
            max_age=CORS_MAX_AGE,
        )

    def _redeploy_when_replaced(self, handler: lambda_.IFunction) -> None:
        """A new stage deployment whenever the function behind `handler` is replaced (its
        packaging switched between zip and image): CDK names the deployment by the methods'
        unresolved references, which a replacement leaves as they are, so the stage would
        keep calling the deleted function's alias."""
        function = handler.version.lambda_ if isinstance(handler, lambda_.Alias) else handler
        resource = function.node.default_child
        if isinstance(resource, lambda_.CfnFunction):
            self.api.latest_deployment.add_to_logical_id(  # type: ignore[union-attr]
                {"handler": {"PackageType": resource.package_type}}
            )

    def error_headers(self) -> dict[str, str]:
        """The headers of every response made before the handler runs (API Gateway's own and
        the firewall's). One value each: with several origins, browsers at the first may read
        them (the handler's responses answer each origin itself)."""
        headers = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
        if self.allowed_origins:
            headers["Access-Control-Allow-Origin"] = self.allowed_origins[0]
            headers["Access-Control-Expose-Headers"] = CORS_EXPOSE_HEADERS
            headers["Vary"] = "Origin"
        return headers

    def _gateway_responses(self) -> None:
        headers = {name: f"'{value}'" for name, value in self.error_headers().items()}
        for error in GATEWAY_ERRORS:
            self.api.add_gateway_response(
                "".join(part.title() for part in error.type.response_type.split("_")),
                type=error.type,
                status_code=error.status or None,
                response_headers=headers,
                templates={
                    "application/json": _ERROR_BODY.format(error=error.error, details=error.details)
                },
            )
