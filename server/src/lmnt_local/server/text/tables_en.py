"""The word tables of the English normaliser: units, currencies, abbreviations, names.

The choice of entries follows hibari-tts's normalize.json (Apache-2.0) and what agent replies
contain: prices, dates, times, addresses, measurements, order and phone numbers.
"""

from __future__ import annotations

__all__ = [
    "ABBREVIATIONS",
    "CURRENCIES",
    "MONTHS",
    "ORDINAL_CUES",
    "REGNAL_NAMES",
    "ROMAN_CARDINAL_CUES",
    "SCALES",
    "STREET_SUFFIXES",
    "SYMBOLS",
    "TITLES",
    "UNITS",
    "US_STATES",
    "WEEKDAYS",
]

# symbol or code -> (one, many, one hundredth, many hundredths); "" when there are no hundredths
CURRENCIES: dict[str, tuple[str, str, str, str]] = {
    "$": ("dollar", "dollars", "cent", "cents"),
    "US$": ("US dollar", "US dollars", "cent", "cents"),
    "USD": ("dollar", "dollars", "cent", "cents"),
    "C$": ("Canadian dollar", "Canadian dollars", "cent", "cents"),
    "CAD": ("Canadian dollar", "Canadian dollars", "cent", "cents"),
    "A$": ("Australian dollar", "Australian dollars", "cent", "cents"),
    "AUD": ("Australian dollar", "Australian dollars", "cent", "cents"),
    "€": ("euro", "euros", "cent", "cents"),
    "EUR": ("euro", "euros", "cent", "cents"),
    "£": ("pound", "pounds", "penny", "pence"),
    "GBP": ("pound", "pounds", "penny", "pence"),
    "¥": ("yen", "yen", "", ""),
    "JPY": ("yen", "yen", "", ""),
    "₹": ("rupee", "rupees", "paisa", "paise"),
    "INR": ("rupee", "rupees", "paisa", "paise"),
    "₩": ("won", "won", "", ""),
    "CHF": ("Swiss franc", "Swiss francs", "centime", "centimes"),
}

SCALES = {
    "k": "thousand",
    "K": "thousand",
    "m": "million",
    "M": "million",
    "mn": "million",
    "MM": "million",
    "b": "billion",
    "B": "billion",
    "bn": "billion",
    "BN": "billion",
    "t": "trillion",
    "T": "trillion",
    "thousand": "thousand",
    "million": "million",
    "billion": "billion",
    "trillion": "trillion",
}

# unit as written after a number -> (one, many)
UNITS: dict[str, tuple[str, str]] = {
    "kg": ("kilogram", "kilograms"),
    "g": ("gram", "grams"),
    "mg": ("milligram", "milligrams"),
    "lb": ("pound", "pounds"),
    "lbs": ("pound", "pounds"),
    "oz": ("ounce", "ounces"),
    "km": ("kilometer", "kilometers"),
    "m": ("meter", "meters"),
    "cm": ("centimeter", "centimeters"),
    "mm": ("millimeter", "millimeters"),
    "mi": ("mile", "miles"),
    "ft": ("foot", "feet"),
    "yd": ("yard", "yards"),
    "mph": ("mile per hour", "miles per hour"),
    "mpg": ("mile per gallon", "miles per gallon"),
    "km/h": ("kilometer per hour", "kilometers per hour"),
    "kph": ("kilometer per hour", "kilometers per hour"),
    "m/s": ("meter per second", "meters per second"),
    "L": ("liter", "liters"),
    "l": ("liter", "liters"),
    "ml": ("milliliter", "milliliters"),
    "mL": ("milliliter", "milliliters"),
    "gal": ("gallon", "gallons"),
    "KB": ("kilobyte", "kilobytes"),
    "kB": ("kilobyte", "kilobytes"),
    "MB": ("megabyte", "megabytes"),
    "GB": ("gigabyte", "gigabytes"),
    "TB": ("terabyte", "terabytes"),
    "Mbps": ("megabit per second", "megabits per second"),
    "Gbps": ("gigabit per second", "gigabits per second"),
    "Hz": ("hertz", "hertz"),
    "kHz": ("kilohertz", "kilohertz"),
    "MHz": ("megahertz", "megahertz"),
    "GHz": ("gigahertz", "gigahertz"),
    "ms": ("millisecond", "milliseconds"),
    "s": ("second", "seconds"),
    "sec": ("second", "seconds"),
    "secs": ("second", "seconds"),
    "min": ("minute", "minutes"),
    "mins": ("minute", "minutes"),
    "h": ("hour", "hours"),
    "hr": ("hour", "hours"),
    "hrs": ("hour", "hours"),
    "wk": ("week", "weeks"),
    "wks": ("week", "weeks"),
    "mo": ("month", "months"),
    "mos": ("month", "months"),
    "yr": ("year", "years"),
    "yrs": ("year", "years"),
    "kW": ("kilowatt", "kilowatts"),
    "kWh": ("kilowatt hour", "kilowatt hours"),
    "W": ("watt", "watts"),
    "V": ("volt", "volts"),
    "mAh": ("milliamp hour", "milliamp hours"),
    "dB": ("decibel", "decibels"),
    "px": ("pixel", "pixels"),
    "fps": ("frame per second", "frames per second"),
    "sq ft": ("square foot", "square feet"),
    "x": ("times", "times"),
    "k": ("thousand", "thousand"),
    "K": ("thousand", "thousand"),
    "M": ("million", "million"),
    "bn": ("billion", "billion"),
}
# only when written straight after the digits ("5in", "6ft"): "5 in a row" is English
ATTACHED_ONLY_UNITS = {"in": ("inch", "inches"), "t": ("ton", "tons")}
# "per month" after a price or amount: "$5/mo"
PER = {
    "mo": "month",
    "month": "month",
    "yr": "year",
    "year": "year",
    "hr": "hour",
    "hour": "hour",
    "h": "hour",
    "day": "day",
    "wk": "week",
    "week": "week",
    "night": "night",
    "person": "person",
    "user": "user",
    "seat": "seat",
    "kg": "kilogram",
    "lb": "pound",
    "GB": "gigabyte",
    "min": "minute",
    "item": "item",
    "unit": "unit",
}

MONTHS = {
    "jan": "January",
    "feb": "February",
    "mar": "March",
    "apr": "April",
    "may": "May",
    "jun": "June",
    "jul": "July",
    "aug": "August",
    "sep": "September",
    "oct": "October",
    "nov": "November",
    "dec": "December",
}
WEEKDAYS = {
    "Mon": "Monday",
    "Tue": "Tuesday",
    "Tues": "Tuesday",
    "Wed": "Wednesday",
    "Thu": "Thursday",
    "Thur": "Thursday",
    "Thurs": "Thursday",
    "Fri": "Friday",
    "Sat": "Saturday",
    "Sun": "Sunday",
}

# before a capitalised name, dot or not: "Dr. Smith", "St Paul"
TITLES = {
    "Dr": "Doctor",
    "Mr": "Mister",
    "Mrs": "Missus",
    "Ms": "Miz",
    "Prof": "Professor",
    "St": "Saint",
    "Mt": "Mount",
    "Ft": "Fort",
    "Gen": "General",
    "Gov": "Governor",
    "Sen": "Senator",
    "Rep": "Representative",
    "Capt": "Captain",
    "Lt": "Lieutenant",
    "Col": "Colonel",
    "Sgt": "Sergeant",
    "Rev": "Reverend",
    "Hon": "Honorable",
    "Pres": "President",
    "Fr": "Father",
}
# after a street name: "Main St.", "Elm Dr"
STREET_SUFFIXES = {
    "St": "Street",
    "Dr": "Drive",
    "Ave": "Avenue",
    "Rd": "Road",
    "Blvd": "Boulevard",
    "Ln": "Lane",
    "Hwy": "Highway",
    "Pkwy": "Parkway",
    "Ct": "Court",
    "Pl": "Place",
    "Sq": "Square",
    "Ter": "Terrace",
}
# anywhere, as written (case matters); a dot, when shown, is part of the abbreviation
ABBREVIATIONS = {
    "approx.": "approximately",
    "Approx.": "Approximately",
    "vs.": "versus",
    "vs": "versus",
    "e.g.": "for example",
    "E.g.": "For example",
    "i.e.": "that is",
    "I.e.": "That is",
    "etc.": "et cetera",
    "a.k.a.": "also known as",
    "aka": "also known as",
    "Jr.": "Junior",
    "Sr.": "Senior",
    "Ave.": "Avenue",
    "Blvd.": "Boulevard",
    "Apt.": "Apartment",
    "apt.": "apartment",
    "Ste.": "Suite",
    "Dept.": "Department",
    "dept.": "department",
    "ext.": "extension",
    "Ext.": "Extension",
    "hrs": "hours",
    "hrs.": "hours",
    "mins": "minutes",
    "mins.": "minutes",
    "yrs": "years",
    "yrs.": "years",
    "Fig.": "Figure",
    "Vol.": "Volume",
    "Ch.": "Chapter",
    "pp.": "pages",
    "ca.": "circa",
    "est.": "estimated",
    "Est.": "Estimated",
    "incl.": "including",
    "excl.": "excluding",
    "approx": "approximately",
    "Mon.": "Monday",
    "Tue.": "Tuesday",
    "Tues.": "Tuesday",
    "Wed.": "Wednesday",
    "Thu.": "Thursday",
    "Thurs.": "Thursday",
    "Fri.": "Friday",
    "Sat.": "Saturday",
    "appt.": "appointment",
    "qty": "quantity",
    "Qty": "Quantity",
    "tel.": "telephone",
    "Tel.": "Telephone",
    "govt": "government",
    "w/": "with",
    "w/o": "without",
    "Inc.": "Inc.",
}

SYMBOLS = {
    "&": "and",
    "+": "plus",
    "=": "equals",
    "@": "at",
    "\u00d7": "times",  # multiplication sign
    "÷": "divided by",
    "±": "plus or minus",
    "≈": "about",
    "~": "about",
    "≤": "at most",
    "≥": "at least",
    "→": "to",
    "§": "section",
    "©": "copyright",
    "™": "",
    "®": "",
    "½": "one half",
    "¼": "one quarter",
    "¾": "three quarters",
    "⅓": "one third",
    "⅔": "two thirds",
    "⅛": "one eighth",
}

# "Henry VIII" -> "Henry the eighth"
REGNAL_NAMES = (
    "Henry Edward Elizabeth George Charles William James Richard John Mary Victoria Anne Louis "
    "Philip Frederick Napoleon Peter Catherine Alexander Nicholas Ivan Constantine Otto Ludwig "
    "Alfonso Ferdinand Isabella Leo Pius Gregory Benedict Innocent Clement Urban Boniface Paul "
    "Francis Ramesses Ptolemy Cleopatra Harald Olaf Gustav Christian Frederik Carl Juan Felipe "
    "Wilhelm Rudolf Sigismund Stephen David Malcolm Robert Kamehameha Rama Selim Mehmed Murad"
).split()
# "World War II" -> "World War two"
ROMAN_CARDINAL_CUES = (
    "War Chapter Part Volume Vol. Book Act Scene Section Article Title Phase Stage Type Class "
    "Level Grade Bowl Episode Season Round Mark Apollo Vatican Olympiad Schedule Appendix Division "
    "Tier Fantasy Rocky"
).split()
ORDINAL_CUES = ("King", "Queen", "Pope", "Emperor", "Tsar", "Czar", "Pharaoh", "Sultan")

US_STATES = frozenset(
    "AL AK AZ AR CA CO CT DE FL GA HI ID IL IN IA KS KY LA ME MD MA MI MN MS MO MT NE NV NH NJ "
    "NM NY NC ND OH OK OR PA RI SC SD TN TX UT VT VA WA WV WI WY DC PR".split()
)
