"""Admins (ADMIN_USERS, by username: accounts' or a trusted proxy's): the user directory with each user's
figures, and what an admin may do to a user: disable and enable, set their monthly token budget, reset
their password, delete them with all their data. Every action is written to the audit list.

Disabling ends the user's sign-ins and API tokens at once, and with them their open streams on every
host (revocations.py: within milliseconds); a disabled account cannot sign in again (nor, behind a
proxy, be let in) until enabled.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from webapp.base.errors import AdminOnly, AdminProtected, InvalidInput, RoleNotFound, UserNotFound
from webapp.config import Settings, admin_names
from webapp.core.accounts import Accounts
from webapp.core.conversations import Conversations
from webapp.core.quota import StorageQuota
from webapp.core.roles import CUSTOM_ID, RoleBook, role_record
from webapp.core.sharing import share_digest
from webapp.core.spending import Spending
from webapp.storage.spending import utc_day
from webapp.storage.store import Store

log = logging.getLogger("webapp.admin")

PAGE_SIZE = 50
MAX_BUDGET = 10**12
SPENDING_MONTHS = 14  # the months whose sums a deleted user leaves (their TTL is far shorter)


@dataclass
class UserRow:
    uid: str
    username: str
    created: float
    last_active: float
    conversations: int
    tokens: int  # this month
    budget: int  # the budget that applies (0 = none)
    own_budget: int | None  # set by an admin (None: the default)
    disabled: bool
    storage: int | None  # bytes, as last measured (None: not recently)
    admin: bool


@dataclass
class UserPage:
    rows: list[UserRow]
    total: int
    page: int
    pages: int
    query: str


def months_back(count: int, at: float | None = None) -> list[str]:
    year, month = time.gmtime(time.time() if at is None else at)[:2]
    months = []
    for _ in range(count):
        months.append(f"{year:04d}-{month:02d}")
        year, month = (year - 1, 12) if month == 1 else (year, month - 1)
    return months


class Admin:
    def __init__(self, store: Store, settings: Settings, accounts: Accounts, conversations: Conversations,
                 spending: Spending, quota: StorageQuota, roles: RoleBook) -> None:
        self.store = store
        self.roles = roles
        self.accounts = accounts
        self.conversations = conversations
        self.spending = spending
        self.quota = quota
        self.names = admin_names(settings)
        self.enabled = settings.auth != "anonymous" and bool(self.names)

    async def admin_name(self, uid: str) -> str:
        """The caller's username if they are an admin; AdminOnly for anyone else."""
        if not self.enabled:
            raise AdminOnly()
        account = await self.store.account(uid)
        name = (account or {}).get("username", "")
        if not name or name.lower() not in self.names or (account or {}).get("disabled"):
            raise AdminOnly()
        return name

    async def is_admin(self, uid: str) -> bool:
        try:
            await self.admin_name(uid)
            return True
        except AdminOnly:
            return False

    async def users(self, page: int = 1, query: str = "") -> UserPage:
        query = "".join(char for char in query.strip() if char.isprintable())[:64]
        page = max(1, page)
        uids, total = await self.store.user_page((page - 1) * PAGE_SIZE, PAGE_SIZE, query)
        figures = await self.store.user_figures(uids, utc_day()[:7])
        rows = []
        for found in figures:
            account = found["account"]
            if not account:  # (deleted meanwhile)
                continue
            if found["storage"] is None:
                self.quota.measure_soon(found["uid"])  # shown at the next look
            rows.append(UserRow(
                uid=found["uid"], username=account.get("username", ""), created=float(account.get("created") or 0),
                last_active=found["last_active"], conversations=found["conversations"], tokens=found["tokens"],
                budget=self.spending.budget_of(found["budget"]), own_budget=found["budget"],
                disabled=bool(account.get("disabled")), storage=found["storage"],
                admin=account.get("username", "").lower() in self.names))
        return UserPage(rows=rows, total=total, page=page, pages=max(1, -(-total // PAGE_SIZE)), query=query)

    async def _account(self, uid: str) -> dict[str, str]:
        account = await self.store.account(uid) if uid.startswith("a_") else None
        if not account:
            raise UserNotFound()
        return account

    async def set_disabled(self, admin: str, uid: str, disabled: bool) -> None:
        account = await self._account(uid)
        self._not_oneself(admin, account)
        await self.store.set_disabled(uid, disabled)
        if disabled:  # their sign-ins and tokens end, and every stream opened with them, on every host
            await self.accounts.sign_out_everywhere(uid, tokens=True)
            await self.accounts.revocations.revoke([self.accounts.user_credential(uid)])  # (a proxy user's)
        await self.store.audit(admin, "disable" if disabled else "enable", account.get("username", uid))

    @staticmethod
    def _not_oneself(admin: str, account: dict[str, str]) -> None:
        """An admin does not lock themselves out (another admin may)."""
        if account.get("username", "").lower() == admin.lower():
            raise InvalidInput()

    async def set_budget(self, admin: str, uid: str, tokens: int | None) -> None:
        """A user's own monthly budget (0: unlimited), or None: the default again."""
        if tokens is not None and not 0 <= tokens <= MAX_BUDGET:
            raise InvalidInput()
        account = await self._account(uid)
        await self.store.set_budget(uid, tokens)
        await self.store.audit(admin, "budget", account.get("username", uid), "default" if tokens is None else str(tokens))

    async def reset_password(self, admin: str, uid: str) -> tuple[str, str]:
        """(username, a new random password, shown once to the admin); the user's sign-ins end."""
        account = await self._account(uid)
        password = await self.accounts.new_password(uid)
        await self.store.audit(admin, "reset_password", account.get("username", uid))
        return account.get("username", ""), password

    async def delete_user(self, admin: str, uid: str, *, confirm: str) -> None:
        """The user and all their data, once `confirm` repeats their username: sign-ins and tokens first
        (their streams end), their replies stopped, conversations, links, roles, search index, spending,
        budget, the account."""
        account = await self._account(uid)
        self._not_oneself(admin, account)
        username = account.get("username", "")
        if username.lower() in self.names:
            raise AdminProtected()
        if confirm.strip().lower() != username.lower():
            raise InvalidInput()
        await self.store.set_disabled(uid, True)
        await self.accounts.sign_out_everywhere(uid, tokens=True)
        await self.accounts.revocations.revoke([self.accounts.user_credential(uid)])
        sids = await self.store.session_ids(uid)
        for start in range(0, len(sids), 50):
            for conversation in await self.store.load_conversations(uid, sids[start:start + 50]):
                said = [m.id for m in await self.store.all_messages(conversation) if m.role == "user"]
                await self.conversations.delete(conversation)
                await self.store.forget_message_ids(uid, said)
        await self.store.remove_user(uid, username, months_back(SPENDING_MONTHS), share_digest)
        await self.store.audit(admin, "delete", username or uid)
        log.info("admin %s deleted user %s (%d conversations)", admin, uid, len(sids))

    async def publish_role(self, admin: str, admin_uid: str, role_id: str) -> None:
        """One of the admin's own roles, copied for everyone (beside the built-in ones; nobody else can edit
        it; publishing again after an edit updates the copy)."""
        role = await self.roles.own_role(admin_uid, role_id)
        await self.store.publish_role(role.id, role_record(role))
        await self.store.audit(admin, "publish_role", role.name_zh)

    async def unpublish_role(self, admin: str, role_id: str) -> None:
        """Conversations that used it answer as the default role from then on (and say so)."""
        if not CUSTOM_ID.fullmatch(role_id):
            raise RoleNotFound()
        published = {role.id: role for role in await self.roles.published()}
        if role_id not in published or not await self.store.unpublish_role(role_id):
            raise RoleNotFound()
        await self.store.audit(admin, "unpublish_role", published[role_id].name_zh)

    async def audit(self, count: int = 50) -> list[dict[str, object]]:
        return await self.store.audit_entries(count)
