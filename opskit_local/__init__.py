"""Running opskit's functions on this machine, without AWS and without Docker.

`emulator` starts moto's server on 127.0.0.1 as the local AWS, `functions` imports a
handler as Lambda would, `api_gateway` turns HTTP requests into API Gateway proxy events,
and `user_service` puts them together for `make api`.

A package of its own, beside `opskit` rather than in it: importing anything under
`opskit` imports aws-cdk-lib, which the handler tests (run on Lambda's newer Python,
without the CDK) must not need. It is a development tool and is not in the wheel.
"""
