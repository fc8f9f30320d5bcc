"""The domain's tables, one module per aggregate; importing this package registers them all."""

from campaign.models.abuse import SiteSetting, Suppression, SuppressionReason, TrendingAlert, TrendingKind
from campaign.models.audit import AuditEvent
from campaign.models.base import Base
from campaign.models.campaigns import Campaign
from campaign.models.deliveries import (
    Cadence,
    Delivery,
    DeliveryKind,
    LetterQuota,
    PetitionMailing,
    RoutedSignature,
    RouteVia,
    RoutingFallback,
    Stance,
    TargetCountry,
    TargetMailing,
    TargetResponse,
)
from campaign.models.integrations import ApiToken, Webhook, WebhookCall, WebhookCallStatus, WebhookEvent
from campaign.models.mail import OutboundEmail, OutboxStatus
from campaign.models.organizing import CampaignTarget, OfflineSignatures
from campaign.models.petitions import MailingPolicy, Petition, PetitionCounter, PetitionStatus
from campaign.models.reach import (
    ExportStatus,
    RecipientStatus,
    SignatureExport,
    SoftBounce,
    SupporterUpdate,
    UpdateRecipient,
    UpdateStatus,
)
from campaign.models.signatures import HoldReason, Signature, SignatureStatus
from campaign.models.supporters import PetitionTranslation
from campaign.models.targets import PetitionTarget, Target
from campaign.models.users import (
    AttemptCounter,
    Invitation,
    InvitationStatus,
    MemberRole,
    Membership,
    User,
    UserStatus,
)

__all__ = [
    "ApiToken",
    "AttemptCounter",
    "AuditEvent",
    "Base",
    "Cadence",
    "Campaign",
    "CampaignTarget",
    "Delivery",
    "DeliveryKind",
    "ExportStatus",
    "HoldReason",
    "Invitation",
    "InvitationStatus",
    "LetterQuota",
    "MailingPolicy",
    "MemberRole",
    "Membership",
    "OfflineSignatures",
    "OutboundEmail",
    "OutboxStatus",
    "Petition",
    "PetitionCounter",
    "PetitionMailing",
    "PetitionStatus",
    "PetitionTarget",
    "PetitionTranslation",
    "RecipientStatus",
    "RouteVia",
    "RoutedSignature",
    "RoutingFallback",
    "Signature",
    "SignatureExport",
    "SignatureStatus",
    "SiteSetting",
    "SoftBounce",
    "Stance",
    "SupporterUpdate",
    "Suppression",
    "SuppressionReason",
    "Target",
    "TargetCountry",
    "TargetMailing",
    "TargetResponse",
    "TrendingAlert",
    "TrendingKind",
    "UpdateRecipient",
    "UpdateStatus",
    "User",
    "UserStatus",
    "Webhook",
    "WebhookCall",
    "WebhookCallStatus",
    "WebhookEvent",
]
