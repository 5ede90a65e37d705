"""Running opskit's functions on this machine, without AWS and without Docker.

`emulator` starts moto's server on 127.0.0.1 as the local AWS, `functions` imports a
handler as Lambda would. `make invoke` and `make local` build on them: `template` keeps the
environment's synthesized template, `catalog` finds its functions, `resources` resolves
their variables to resources created on the emulator, `stand_ins` serves a webhook and
Lambda/CodeDeploy, `runner` runs a handler like Lambda, `session` puts these together,
`state` is what a running `make local` tells `make invoke`, and `invoke`/`serve` are the
two commands. `api_gateway`, `sandboxes` and `user_service` make `make api`.

A package of its own, beside `opskit` rather than in it: importing anything under
`opskit` imports aws-cdk-lib, which the handler tests (run on Lambda's newer Python,
without the CDK) must not need. It is a development tool and is not in the wheel.
"""
