"""Domain errors: raised in the core, turned into a status and a localized message in one handler.

Every error a user can be shown is a class here: `status` is the HTTP status, `key`
the i18n catalog key, and keyword arguments fill the message's placeholders.
`webapp/error_handlers.py` renders them, as JSON for the API and HTML for pages.
"""

from __future__ import annotations


class ChatError(Exception):
    """Base class: `status` is the HTTP status, `key` the i18n catalog key."""

    status = 400
    key = "error.invalid_input"

    def __init__(self, **params: object) -> None:
        super().__init__(self.key)
        self.params = params

    def __reduce__(self) -> tuple:
        """Pickled by its class and parameters (a file decoder's refusal crosses from its worker process)."""
        return _restore, (type(self), self.params), self.__dict__

    @property
    def headers(self) -> dict[str, str]:
        """Response headers this error asks for, whatever form (JSON, page, toast) it is shown in."""
        return {}


class EmptyMessage(ChatError):
    key = "error.message_empty"


class MessageTooLong(ChatError):
    key = "error.message_too_long"


class UndecodableText(ChatError):
    """Text that is not valid Unicode (a lone surrogate such as "\\ud800" in JSON): it cannot be stored."""

    key = "error.invalid_text"


class UnknownRole(ChatError):
    key = "error.unknown_role"


class InvalidInput(ChatError):
    status = 422


class RoleLimit(ChatError):
    status = 409
    key = "error.role_limit"


class RoleNotFound(ChatError):
    status = 404
    key = "error.role_not_found"


class UnknownModel(ChatError):
    key = "error.unknown_model"


class ShareNotFound(ChatError):
    status = 404
    key = "error.share_not_found"


class InvalidImport(ChatError):
    key = "error.invalid_import"


class ImportTooBig(ChatError):
    """Importing would go past a limit (conversations, roles): nothing was imported."""

    status = 409
    key = "error.import_limit"


class InvalidId(ChatError):
    key = "error.invalid_id"


class InvalidUserId(ChatError):
    key = "error.invalid_user_id"


class InvalidCursor(ChatError):
    key = "error.invalid_cursor"


class EmptyTitle(ChatError):
    key = "error.title_empty"


class ForbiddenUser(ChatError):
    status = 403
    key = "error.forbidden_user"


class CrossSiteRequest(ChatError):
    """A state-changing request that another site's page made the browser send."""

    status = 403
    key = "error.cross_site"


class BadCsrfToken(ChatError):
    """A web UI form or HTMX request without its identity's token (or with another's)."""

    status = 403
    key = "error.csrf"


class SessionNotFound(ChatError):
    status = 404
    key = "error.session_not_found"


class TurnNotFound(ChatError):
    status = 404
    key = "error.turn_not_found"


class MessageNotFound(ChatError):
    status = 404
    key = "error.message_not_found"


class NothingToRegenerate(ChatError):
    """Only the last reply (or a message left without one) can be answered again."""

    status = 409
    key = "error.nothing_to_regenerate"


class VersionLimit(ChatError):
    """A message already has as many versions (or as much kept aside) as one may."""

    status = 409
    key = "error.version_limit"


class NoSuchVersion(ChatError):
    status = 404
    key = "error.no_such_version"


class TurnRunning(ChatError):
    status = 409
    key = "error.turn_running"


class UndoExpired(ChatError):
    status = 410
    key = "ui.restore_expired"


class RateLimited(ChatError):
    """Too many of something in a window; `retry_after` seconds until the window ends."""

    status = 429
    key = "error.rate_limited"

    def __init__(self, retry_after: int = 60, **params: object) -> None:
        super().__init__(**params)
        self.retry_after = retry_after

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class OverBudget(RateLimited):
    """The user's monthly token budget is used up: no turn starts until it resets (`resets`, a date)."""

    key = "error.over_budget"


class BudgetBusy(ChatError):
    """A user with a token budget has one reply written at a time (core/spending.py says why)."""

    status = 409
    key = "error.budget_busy"


class AccountDisabled(ChatError):
    status = 403
    key = "error.account_disabled"


class AdminOnly(ChatError):
    """Every admin route answers this to anyone else (403 whether or not the thing exists: no leak)."""

    status = 403
    key = "error.admin_only"


class UserNotFound(ChatError):
    status = 404
    key = "error.user_not_found"


class ImportsLimited(RateLimited):
    """IMPORTS_PER_HOUR or IMPORT_BYTES_PER_HOUR reached: nothing was imported."""

    key = "error.imports_limited"


class SignInsHereLimited(RateLimited):
    """Too many wrong passwords for one account from one address."""

    key = "error.sign_ins_here_limited"


class AccountSignInsLimited(RateLimited):
    """Too many wrong passwords for one account from browsers that never signed in to it."""

    key = "error.account_sign_ins_limited"


class InvalidUsername(ChatError):
    key = "error.invalid_username"


class WeakPassword(ChatError):
    """A password the policy refuses (core/passwords.py); each rule has its own message."""

    key = "error.weak_password"


class PasswordTooShort(WeakPassword):
    key = "error.password_short"


class PasswordTooLong(WeakPassword):
    key = "error.password_long"


class CommonPassword(WeakPassword):
    key = "error.password_common"


class PasswordHasUsername(WeakPassword):
    key = "error.password_username"


class SignInRequired(ChatError):
    status = 401
    key = "error.sign_in_required"


class BadCredentials(ChatError):
    status = 401
    key = "error.bad_credentials"


class BadToken(ChatError):
    status = 401
    key = "error.bad_token"


class SignupClosed(ChatError):
    status = 403
    key = "error.signup_closed"


class SeedApiOff(ChatError):
    status = 404
    key = "error.seed_api_off"


class TokenNotFound(ChatError):
    status = 404
    key = "error.token_not_found"


class UsernameTaken(ChatError):
    status = 409
    key = "error.username_taken"


class NameKeptForAdmin(ChatError):
    """Sign-up of a name in ADMIN_USERS: whoever took it would be an admin (the CLI's create-user makes it)."""

    status = 409
    key = "error.name_kept_for_admin"


class AdminProtected(ChatError):
    """An admin's account is not deleted from the admin page: its name, freed, would make the next sign-up an admin."""

    status = 409
    key = "error.admin_protected"


class TooManyConversations(ChatError):
    status = 409
    key = "error.too_many_conversations"


class ConversationFull(ChatError):
    """MAX_MESSAGES_PER_CONVERSATION reached: a new conversation goes on (nothing is trimmed)."""

    status = 409
    key = "error.conversation_full"


class StorageFull(ChatError):
    """STORAGE_QUOTA_BYTES reached: nothing large is written until conversations are deleted."""

    status = 413
    key = "error.storage_full"


class AttachmentTooLarge(ChatError):
    """A file over MAX_ATTACHMENT_BYTES (the limit is in the message)."""

    status = 413
    key = "error.attachment_too_large"


class TooManyAttachments(ChatError):
    key = "error.too_many_attachments"


class EmptyAttachment(ChatError):
    key = "error.attachment_empty"


class UnsupportedAttachment(ChatError):
    """Content that is no image, PDF or text, or whose name says another type than its bytes (415)."""

    status = 415
    key = "error.attachment_type"


class UnreadableAttachment(ChatError):
    """A corrupt image or PDF, an encrypted PDF, an image over IMAGE_MAX_PIXELS."""

    status = 422
    key = "error.attachment_unreadable"


class AttachmentNotFound(ChatError):
    status = 404
    key = "error.attachment_not_found"


class ImagesNotSupported(ChatError):
    """Images for a model not listed in OPENAI_VISION_MODELS: refused before the model is called."""

    status = 422
    key = "error.images_not_supported"


class RequestTooLarge(ChatError):
    status = 413
    key = "error.request_too_large"


class TooManyStreams(ChatError):
    status = 429
    key = "error.too_many_streams"


class TooManyPins(ChatError):
    status = 409
    key = "error.too_many_pins"


class TooManyFolders(ChatError):
    status = 409
    key = "error.too_many_folders"


class FolderNotFound(ChatError):
    status = 404
    key = "error.folder_not_found"


class FolderNameTaken(ChatError):
    status = 409
    key = "error.folder_name_taken"


class BadFolderName(ChatError):
    status = 422
    key = "error.folder_name"


class TooManyInBatch(ChatError):
    status = 422
    key = "error.batch_too_big"


def _restore(cls: type[ChatError], params: dict) -> ChatError:
    return cls(**params)
