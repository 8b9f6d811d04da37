"""The Store: every Redis command of the app, one module per concept. Nothing else touches Redis;
nothing here knows HTTP.

The store knows keys, commands and which writes must be atomic; it holds no policy:
what a title or preview says, whether a rate is over its limit, or which conversation
to reuse is decided by the core (core/conversations.py, core/turns/) and handed in.

Keys (all under REDIS_PREFIX, default `chat:`). `{uid}` is a Redis Cluster hash tag:
everything of one identity lives in one slot, so every MULTI and script touches one
slot and the same code runs on one Redis, Sentinel and Cluster (keys.py names them all):

    {uid}:claim                        claim marker of an identity: when its data expires (unix s); no TTL, never evicted
    {uid}:sessions                     ZSET session_id -> last activity (ms), index TTL
    {uid}:s:{sid}                      HASH metadata (user_id, title, preview, role, count, created, updated, turn: the running turn, last: the newest turn;
                                       pinned, archived: ms, folder: id when set)
    {uid}:s:{sid}:messages             LIST of JSON messages, RPUSH (chronological), conversation TTL
    {uid}:s:{sid}:lock                 the running turn's id: a lease its writer keeps renewing (a few seconds)
    {uid}:s:{sid}:versions             HASH list index -> "shown/count" where a message has versions
    {uid}:s:{sid}:forks                HASH list index -> JSON of the versions kept aside there (versions.py)
    {uid}:s:{sid}:files                HASH a conversation's attachments: {fid} -> JSON record, {fid}:d -> the bytes
                                       (an image resized), {fid}:t -> a document's text for the model; conversation TTL
    {uid}:uploads                      HASH the same for files uploaded but not sent yet (POST /api/files), 1 h from
                                       the last upload; a turn moves its files into the conversation's hash
    {uid}:trash:{sid}:files            a deleted conversation's files hash, renamed, kept with its trash copy for undo
    {uid}:m:{mid}                      the session id of a user message (edit by message id), conversation TTL
    {uid}:request:{rid}                the turn a client request id started (a repeated request starts none), 10 min
    {uid}:t:{tid}                      HASH turn state (session_id, user_id, status, message_id; cancel: Stop was asked)
    {uid}:t:{tid}:events               STREAM of reply events, ids `0-{seq}`, capped, expires after the turn
    {uid}:t:{tid}:recovery             the one host saving an orphaned turn, 60 s
    {uid}:trash:{sid}                  JSON copy of a conversation deleted from the web UI, kept briefly for undo
    {uid}:account                      HASH an account (username, password hash, created); no TTL
    {uid}:signins                      SET the sign-in hashes of a user (sign out everywhere)
    {uid}:tokens                       HASH token id -> JSON {name, created, hash} of a user's tokens
    {uid}:roles                        HASH role id -> JSON of a custom role; index TTL, refreshed when listed
    {uid}:usage                        the bytes the user's data took when last measured (core/quota.py), 10 min
    {uid}:spend:{YYYY-MM}              HASH a month's tokens: t (in + out), "DD|model|i|o|n|e" (in, out, replies, estimated
                                       replies per day and model), summed in the save's MULTI; index TTL
    {uid}:budget                       a user's own monthly token budget, set by an admin (0 = none); no TTL
    {uid}:lane                         the turn id holding a budgeted user's one reply at a time; TURN_TIMEOUT_SECONDS
    {uid}:shares                       HASH session id -> the read-only link's token; no TTL (revoked with it)
    {uid}:pinned                       ZSET session id -> when pinned (ms), index TTL, renewed when the sidebar is listed
    {uid}:archived                     ZSET session id -> when archived (ms), index TTL, renewed when listed
    {uid}:folders                      HASH folder id -> JSON {name, created} of a user's folders, index TTL, renewed when listed
    {uid}:filed                        HASH session id -> folder id (a conversation is in at most one), index TTL, renewed when listed
    {uid}:archived:renewed             marker: today the archived conversations' keys had their index TTL renewed, 1 day
                                       (the metadata hash carries the same three facts, `pinned`, `archived`, `folder`;
                                       one MULTI writes both; an archived conversation's keys take the index TTL)
    {uid}:w:{term}                     SET session ids whose title or messages hold a search term, index TTL
    {uid}:lex                          ZSET (all scores 0) every search term of the user: prefix lookups, index TTL
    {uid}:s:{sid}:terms                SET the search terms of a conversation (to unindex it), index TTL
    {uid}:searchidx                    marker: the search index holds every conversation, index TTL
    {uid}:tmp:{rand}                   ZSET scratch result of one search, deleted in the same MULTI
    share:{sha256}                     JSON {uid, sid} of a read-only link, by the hash of its token; no TTL
    limit:{name}:{key}:{window}        a limit's hits in one window (key hash-tagged): read as the previous
                                       window through the next one (a sliding window), then expires
    account:name:{username}            the uid of a username (lower case); no TTL
    signin:{sha256}                    HASH a sign-in (uid, created), by the hash of its cookie; session TTL
    token:{sha256}                     the uid of a personal API token, by the hash of the token; no TTL
    users                              ZSET uid -> created (s) of every account: the admin page's pages; no TTL
    users:names                        ZSET (all scores 0) "username|uid" (lower case): the admin page's search; no TTL
    users:filled                       marker: the accounts made before the directory are in it (fill_directory); no TTL
    roles:published                    HASH role id -> JSON of a role an admin published to everyone (a copy); no TTL
    admin:audit                        LIST JSON {who, what, whom, detail, at} of admin actions, newest first, last 1000
    turns:running                      ZSET "uid/tid" -> lease deadline (ms) of every generating turn
    follower:{worker}:wake             STREAM a worker's follower wake-up (one Redis only)
    layout                             the key layout version (a one-off migration at start, migrate.py)
    readyz:{host}                      /readyz's keyed write, 10 s
    cancel                             pub/sub channel: turn ids to cancel, on whichever worker runs them
    wake                               pub/sub channel (Cluster only): the turns whose events a flush wrote
    revoked                            pub/sub channel: hashes of sign-ins and tokens just revoked (their streams end)
"""

from __future__ import annotations

from webapp.storage.accounts import AccountStore
from webapp.storage.attachments import AttachmentStore
from webapp.storage.conversations import ConversationStore
from webapp.storage.directory import DirectoryStore
from webapp.storage.identities import IdentityStore
from webapp.storage.limits import LimitStore
from webapp.storage.messages import MessageStore
from webapp.storage.organization import OrganizationStore
from webapp.storage.roles import RoleStore
from webapp.storage.shares import ShareStore
from webapp.storage.turns import TurnStore
from webapp.storage.usage import UsageStore


class Store(ConversationStore, MessageStore, TurnStore, IdentityStore, AccountStore, LimitStore, RoleStore, ShareStore,
            UsageStore, DirectoryStore, OrganizationStore, AttachmentStore):
    """The one object the core is handed: each concept's commands come from its own module
    (conversations, messages, turns and turn_events, identities, accounts, limits, roles, shares,
    search, usage, spending, directory, organization, attachments; the connection in base), composed here. Modules own their keys' commands; keys.py
    names every key."""
