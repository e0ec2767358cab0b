"""Display only: functions here take results and return figures or widgets; they never compute stages."""
