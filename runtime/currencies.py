"""The currencies a price may be in: ISO 4217's active national currencies.

From ISO 4217 List One (as maintained by SIX, the standard's registrar) as of
2026, without the codes no ticket is priced in: precious metals (XAU, XAG,
XPD, XPT), bond-market and drawing-right units (XBA-XBD, XDR, XSU, XUA),
fund codes (BOV, CHE, CHW, CLF, COU, MXV, USN, UYI, UYW), the testing code
XTS and "no currency" XXX; and without the withdrawn ones (ANG, BGN since
the euro's adoption in 2026, CUC, HRK, SLL, VEF, ZWL).

A committed list rather than a dependency: the PyPI packages that carry it
(pycountry, for one) ship every country, language and locale besides, and
the list changes a few times a decade, by an amendment that says exactly
what to add or drop here.
"""

from __future__ import annotations

_CODES = """
    AED AFN ALL AMD AOA ARS AUD AWG AZN BAM BBD BDT BHD BIF BMD BND BOB BRL BSD
    BTN BWP BYN BZD CAD CDF CHF CLP CNY COP CRC CUP CVE CZK DJF DKK DOP DZD EGP
    ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS
    INR IQD IRR ISK JMD JOD JPY KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR
    LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MYR MZN NAD NGN
    NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD
    SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY
    TTD TWD TZS UAH UGX USD UYU UZS VED VES VND VUV WST XAF XCD XCG XOF XPF YER
    ZAR ZMW ZWG
"""
ISO_4217 = frozenset(_CODES.split())


def is_currency(code: str) -> bool:
    """Whether `code` is an active ISO 4217 currency, as written (upper case)."""
    return code in ISO_4217
