"""privacy stage: pseudonyms, keys, retention and subject rights.

``keys`` (key files, epochs), ``cryptopan`` (prefix-preserving addresses), ``pseudonym``
(``Pseudonymizer``), ``retention`` (``RetentionPolicy``, purge, subject export/erase).
See docs/privacy.md.
"""
