"""voip stage: SIP dialogs and call records, SDP, RTP/RTCP quality, E-model.

A self-contained library (no I/O, packet time passed in): ``sip`` parses and frames
messages, ``websocket`` unwraps SIP over WebSocket (RFC 7118), ``dialogs.CallTracker``
turns them into ``records.CallRecord`` and ``records.RegistrationRecord``, ``rtp`` meters
media into ``records.RtpStreamRecord``, ``emodel`` rates it. Identities leave this
package only as pseudonyms (``pseudo``).
"""
