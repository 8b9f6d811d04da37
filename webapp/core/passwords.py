"""The password policy, after NIST SP 800-63B (5.1.1.2): length, not a common password, not the username.

- **Length**: at least MIN_PASSWORD characters, counted as code points after NFKC normalisation
  (so a full-width "１２３４" is "1234", and an emoji is one), leaving out invisible ones (control and
  format characters such as the zero-width space) and spaces at either end. A password of spaces
  or of invisible characters alone is therefore refused; spaces inside a passphrase count.
- **Not common**: not one of the 19,640 passwords of `data/common-passwords.txt.gz` (compared in lower
  case, invisible characters left out): the list Django ships (`django/contrib/auth/`,
  BSD-3-Clause), Royce Williams' top 20,000 of breached passwords, unhexed, lowercased and
  deduplicated (data/README.md).
- **Not the username** (nor containing it, for names of 4 characters or more).
- No composition rules (a digit, a symbol...) and no expiry: NIST advises against both.

What is hashed is the NFKC form, so a password typed with another keyboard's forms of the same
characters still signs in (accounts.py).
"""

from __future__ import annotations

import gzip
import unicodedata
from functools import cache
from pathlib import Path

from webapp.base.errors import CommonPassword, PasswordHasUsername, PasswordTooLong, PasswordTooShort

MIN_PASSWORD = 8
MAX_PASSWORD = 256
COMMON_PASSWORDS = Path(__file__).resolve().parent / "data" / "common-passwords.txt.gz"
INVISIBLE = frozenset({"Cc", "Cf", "Cs", "Cn", "Zl", "Zp"})  # control, format, surrogate, unassigned, breaks


@cache
def common_passwords() -> frozenset[str]:
    """The shipped list, read once (about 20,000 lines, 80 KB gzipped) on the first sign-up or password check."""
    with gzip.open(COMMON_PASSWORDS, "rt", encoding="utf-8") as lines:
        return frozenset(line.strip() for line in lines if line.strip())


def normalized(password: str) -> str:
    """The form that is hashed and checked: NFKC, as NIST asks."""
    return unicodedata.normalize("NFKC", password)


def visible(password: str) -> str:
    """The normalised password without invisible characters and without spaces at either end."""
    return "".join(c for c in normalized(password) if unicodedata.category(c) not in INVISIBLE).strip()


def check_password(password: str, username: str) -> str:
    """The password to hash (NFKC), or the policy error naming the rule it breaks."""
    if len(password) > MAX_PASSWORD:
        raise PasswordTooLong(limit=MAX_PASSWORD)
    shown = visible(password)
    if len(shown) < MIN_PASSWORD:
        raise PasswordTooShort(limit=MIN_PASSWORD)
    folded = shown.casefold()
    name = username.casefold()
    if name and (folded == name or (len(name) >= 4 and name in folded)):
        raise PasswordHasUsername()
    if folded in common_passwords() or folded.replace(" ", "") in common_passwords():
        raise CommonPassword()
    return normalized(password)
