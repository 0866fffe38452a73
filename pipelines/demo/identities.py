"""Fake patient identities: names, birth dates, MRNs, phone numbers, accessions.

They look like PHI on purpose, so that the de-identification in preprocessing is exercised on the
demo cohort. All are drawn from a seeded generator; none belongs to a real person (names are common
given names and surnames combined at random; phone numbers use the 555-01xx range reserved for
fiction by the North American Numbering Plan).
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np

_GIVEN_FEMALE = [
    "Mary",
    "Linda",
    "Susan",
    "Karen",
    "Nancy",
    "Lisa",
    "Sandra",
    "Ashley",
    "Emily",
    "Donna",
    "Michelle",
    "Carol",
    "Amanda",
    "Melissa",
    "Deborah",
    "Laura",
    "Rebecca",
    "Sharon",
    "Cynthia",
    "Kathleen",
    "Amy",
    "Angela",
    "Helen",
    "Anna",
    "Brenda",
    "Pamela",
    "Nicole",
    "Ruth",
    "Katherine",
    "Olivia",
]
_GIVEN_MALE = [
    "James",
    "Robert",
    "John",
    "Michael",
    "David",
    "William",
    "Richard",
    "Joseph",
    "Thomas",
    "Charles",
    "Daniel",
    "Matthew",
    "Anthony",
    "Mark",
    "Donald",
    "Steven",
    "Paul",
    "Andrew",
    "Joshua",
    "Kenneth",
    "Kevin",
    "Brian",
    "George",
    "Edward",
    "Ronald",
    "Timothy",
    "Jason",
    "Jeffrey",
    "Ryan",
    "Gary",
]
_SURNAMES = [
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Garcia",
    "Miller",
    "Davis",
    "Rodriguez",
    "Martinez",
    "Hernandez",
    "Lopez",
    "Gonzalez",
    "Wilson",
    "Anderson",
    "Thomas",
    "Taylor",
    "Moore",
    "Jackson",
    "Martin",
    "Lee",
    "Perez",
    "Thompson",
    "White",
    "Harris",
    "Sanchez",
    "Clark",
    "Ramirez",
    "Lewis",
    "Robinson",
    "Walker",
    "Young",
    "Allen",
    "King",
    "Wright",
    "Scott",
    "Torres",
    "Nguyen",
    "Hill",
    "Flores",
    "Green",
    "Adams",
    "Nelson",
    "Baker",
    "Hall",
    "Rivera",
    "Campbell",
    "Mitchell",
    "Carter",
    "Roberts",
    "Okafor",
    "Kowalski",
    "Novak",
    "Haddad",
    "Tanaka",
]
_PHYSICIANS = (
    "Dr. Alan Reyes",
    "Dr. Priya Natarajan",
    "Dr. Helen Osei",
    "Dr. Martin Kraus",
    "Dr. Sofia Lindqvist",
)
INSTITUTIONS = {
    "A": "Northfield General Hospital",
    "B": "Riverside Community Clinic",
    "C": "St. Aurelia Heart Centre",
}


@dataclasses.dataclass(frozen=True)
class Identity:
    given_name: str
    family_name: str
    sex: str  # "Male" | "Female"
    birth_date: dt.date
    mrn: str
    phone: str
    referring_physician: str

    @property
    def full_name(self) -> str:
        return f"{self.given_name} {self.family_name}"

    @property
    def dicom_name(self) -> str:
        """DICOM PN value: family^given."""
        return f"{self.family_name}^{self.given_name}"

    def age_on(self, day: dt.date) -> int:
        return (
            day.year
            - self.birth_date.year
            - ((day.month, day.day) < (self.birth_date.month, self.birth_date.day))
        )


def make_identity(rng: np.random.Generator, index: int) -> Identity:
    """The ``index``-th subject's identity; the MRN embeds the index so MRNs are unique."""
    sex = "Female" if rng.random() < 0.5 else "Male"
    given = str(rng.choice(_GIVEN_FEMALE if sex == "Female" else _GIVEN_MALE))
    family = str(rng.choice(_SURNAMES))
    birth = dt.date(1935, 1, 1) + dt.timedelta(days=int(rng.integers(0, 365 * 65)))
    mrn = f"MRN{index:05d}{int(rng.integers(10, 99))}"
    phone = f"({int(rng.integers(200, 989))}) 555-01{int(rng.integers(0, 100)):02d}"
    return Identity(given, family, sex, birth, mrn, phone, str(rng.choice(_PHYSICIANS)))


def make_accession(subject_index: int, study_index: int, rng: np.random.Generator) -> str:
    return f"ACC{subject_index:05d}{study_index}{int(rng.integers(100, 999))}"
