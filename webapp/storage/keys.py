"""Every Redis key name of the app, in one place (store.py says what each holds).

Everything one identity owns sits under the Redis Cluster hash tag `{uid}`: its
conversations, messages, turns, their event streams, locks, undo copies and limit
counters share one slot. So each MULTI and script of the store touches one slot,
and the same commands run on one Redis, behind Sentinel, and on a Cluster. Keys
looked up by something else than the owner (a username, a cookie's hash, a token's
hash) have their own slots and are only ever read or written one at a time.
"""

from __future__ import annotations

from typing import NamedTuple

LAYOUT_VERSION = "2"


class TurnRef(NamedTuple):
    """A turn by its owner and id: its keys are in the owner's slot."""

    user_id: str
    turn_id: str


class Keys:
    """Key names under one prefix (REDIS_PREFIX), so several apps can share a Redis."""

    def __init__(self, prefix: str = "chat:") -> None:
        self.prefix = prefix
        self.cancel_channel = prefix + "cancel"
        self.running = prefix + "turns:running"
        self.layout = prefix + "layout"
        self.wake_channel = prefix + "wake"
        self.revoked_channel = prefix + "revoked"
        self.users = prefix + "users"
        self.user_names = prefix + "users:names"
        self.users_filled = prefix + "users:filled"
        self.audit = prefix + "admin:audit"
        self.published_roles = prefix + "roles:published"

    # one identity's slot ---------------------------------------------------

    def owner(self, uid: str) -> str:
        return f"{self.prefix}{{{uid}}}"

    def claim(self, uid: str) -> str:
        return self.owner(uid) + ":claim"

    def index(self, uid: str) -> str:
        return self.owner(uid) + ":sessions"

    def meta(self, uid: str, sid: str) -> str:
        return f"{self.owner(uid)}:s:{sid}"

    def messages(self, uid: str, sid: str) -> str:
        return self.meta(uid, sid) + ":messages"

    def lock(self, uid: str, sid: str) -> str:
        return self.meta(uid, sid) + ":lock"

    def versions(self, uid: str, sid: str) -> str:
        return self.meta(uid, sid) + ":versions"

    def forks(self, uid: str, sid: str) -> str:
        return self.meta(uid, sid) + ":forks"

    def conversation_keys(self, uid: str, sid: str) -> tuple[str, str, str, str, str]:
        """What deleting a conversation removes (the lock stays: a running turn still holds it)."""
        return (self.meta(uid, sid), self.messages(uid, sid), self.versions(uid, sid), self.forks(uid, sid),
                self.files(uid, sid))

    def files(self, uid: str, sid: str) -> str:
        return self.meta(uid, sid) + ":files"

    def trashed_files(self, uid: str, sid: str) -> str:
        return self.trash(uid, sid) + ":files"

    def uploads(self, uid: str) -> str:
        return self.owner(uid) + ":uploads"

    def message(self, uid: str, mid: str) -> str:
        return f"{self.owner(uid)}:m:{mid}"

    def request(self, uid: str, request_id: str) -> str:
        return f"{self.owner(uid)}:request:{request_id}"

    def turn(self, ref: TurnRef) -> str:
        return f"{self.owner(ref.user_id)}:t:{ref.turn_id}"

    def events(self, ref: TurnRef) -> str:
        return self.turn(ref) + ":events"

    def recovery(self, ref: TurnRef) -> str:
        return self.turn(ref) + ":recovery"

    def trash(self, uid: str, sid: str) -> str:
        return f"{self.owner(uid)}:trash:{sid}"

    def account(self, uid: str) -> str:
        return self.owner(uid) + ":account"

    def signins(self, uid: str) -> str:
        return self.owner(uid) + ":signins"

    def tokens(self, uid: str) -> str:
        return self.owner(uid) + ":tokens"

    def roles(self, uid: str) -> str:
        return self.owner(uid) + ":roles"

    def usage(self, uid: str) -> str:
        return self.owner(uid) + ":usage"

    def spending(self, uid: str, month: str) -> str:
        return f"{self.owner(uid)}:spend:{month}"

    def budget(self, uid: str) -> str:
        return self.owner(uid) + ":budget"

    def budget_lane(self, uid: str) -> str:
        return self.owner(uid) + ":lane"

    def shares(self, uid: str) -> str:
        return self.owner(uid) + ":shares"

    def pinned(self, uid: str) -> str:
        return self.owner(uid) + ":pinned"

    def archived(self, uid: str) -> str:
        return self.owner(uid) + ":archived"

    def folders(self, uid: str) -> str:
        return self.owner(uid) + ":folders"

    def filed(self, uid: str) -> str:
        return self.owner(uid) + ":filed"

    def archive_renewed(self, uid: str) -> str:
        return self.owner(uid) + ":archived:renewed"

    def shelves(self, uid: str) -> tuple[str, str, str, str]:
        """A user's organisation of their conversations (organization.py): pins, archive, folders, filing."""
        return self.pinned(uid), self.archived(uid), self.folders(uid), self.filed(uid)

    def term(self, uid: str, term: str) -> str:
        return f"{self.owner(uid)}:w:{term}"

    def lexicon(self, uid: str) -> str:
        return self.owner(uid) + ":lex"

    def conversation_terms(self, uid: str, sid: str) -> str:
        return self.meta(uid, sid) + ":terms"

    def search_ready(self, uid: str) -> str:
        return self.owner(uid) + ":searchidx"

    def search_scratch(self, uid: str, name: str) -> str:
        return f"{self.owner(uid)}:tmp:{name}"

    # counted per key (an identity's counters share its slot) ------------------

    def limit(self, name: str, key: str, window: int) -> str:
        return f"{self.prefix}limit:{name}:{{{key}}}:{window}"

    # looked up by something else than the owner ---------------------------------

    def account_name(self, username: str) -> str:
        return f"{self.prefix}account:name:{username.lower()}"

    def signin(self, digest: str) -> str:
        return f"{self.prefix}signin:{digest}"

    def token(self, digest: str) -> str:
        return f"{self.prefix}token:{digest}"

    def share(self, digest: str) -> str:
        return f"{self.prefix}share:{digest}"

    def follower_wake(self, worker_id: str) -> str:
        return f"{self.prefix}follower:{worker_id}:wake"

    def readyz(self, host: str) -> str:
        return f"{self.prefix}readyz:{host}"

    @staticmethod
    def running_member(ref: TurnRef) -> str:
        return f"{ref.user_id}/{ref.turn_id}"

    @staticmethod
    def running_ref(member: str) -> TurnRef:
        user_id, _, turn_id = member.partition("/")
        return TurnRef(user_id, turn_id)
