"""cdk-opskit: AWS CDK constructs for operational Lambda functions.

Every construct takes an `EnvironmentProfile` and builds its functions
through `OpsFunction`, so each comes with a version and alias, safe
deployment, alarms, dead-letter queues and least-privilege IAM.
"""

from opskit.bundling import asset_code
from opskit.constructs.alarms import Severity, create_alarms
from opskit.constructs.backup import BackupAutomation, BackupType
from opskit.constructs.budget import MonthlyBudget, allow_budget_alerts
from opskit.constructs.deployment_notifier import DeploymentNotifier, WebhookFormat
from opskit.constructs.environment_scheduler import EnvironmentScheduler, SchedulerTimes
from opskit.constructs.layers import common_layer, powertools_layer
from opskit.constructs.log_processor import LogProcessor, LogProcessorThresholds
from opskit.constructs.monitoring import Monitoring
from opskit.constructs.ops_function import (
    AlarmThresholds,
    OpsFunction,
    ScheduleOptions,
    latest_python_runtime,
)
from opskit.constructs.snapshot_cleanup import CleanupScope, SnapshotCleanup
from opskit.constructs.user_service import (
    ApiFirewall,
    ApiThrottling,
    UserService,
    UserServiceThresholds,
)
from opskit.container_image import PACKAGING_CONTEXT, Packaging
from opskit.errors import BundlingError, OpsKitError, ProfileError, PropsError
from opskit.profile import (
    BUILT_IN_PROFILES,
    DEV,
    PROD,
    STAGING,
    DeploymentStrategy,
    EnvironmentProfile,
)

__version__ = "0.1.0"
"""The distribution's only version: pyproject.toml reads it; releases are tagged v<version>."""

__all__ = [
    "BUILT_IN_PROFILES",
    "DEV",
    "PACKAGING_CONTEXT",
    "PROD",
    "STAGING",
    "AlarmThresholds",
    "ApiFirewall",
    "ApiThrottling",
    "BackupAutomation",
    "BackupType",
    "BundlingError",
    "CleanupScope",
    "DeploymentNotifier",
    "DeploymentStrategy",
    "EnvironmentProfile",
    "EnvironmentScheduler",
    "LogProcessor",
    "LogProcessorThresholds",
    "Monitoring",
    "MonthlyBudget",
    "OpsFunction",
    "OpsKitError",
    "Packaging",
    "ProfileError",
    "PropsError",
    "ScheduleOptions",
    "SchedulerTimes",
    "Severity",
    "SnapshotCleanup",
    "UserService",
    "UserServiceThresholds",
    "WebhookFormat",
    "allow_budget_alerts",
    "asset_code",
    "common_layer",
    "create_alarms",
    "latest_python_runtime",
    "powertools_layer",
]
