"""The domain's tables, one module per aggregate; importing this package registers them all."""

from campaign.models.base import Base
from campaign.models.campaigns import Campaign
from campaign.models.mail import OutboundEmail, OutboxStatus
from campaign.models.petitions import MailingPolicy, Petition, PetitionCounter, PetitionStatus
from campaign.models.signatures import Signature, SignatureStatus
from campaign.models.targets import PetitionTarget, Target

__all__ = [
    "Base",
    "Campaign",
    "MailingPolicy",
    "OutboundEmail",
    "OutboxStatus",
    "Petition",
    "PetitionCounter",
    "PetitionStatus",
    "PetitionTarget",
    "Signature",
    "SignatureStatus",
    "Target",
]
