from setuptools import find_packages, setup

with open('README.md', encoding='utf-8') as f:
    long_description = f.read()

setup(
    name='rpcmq',
    version='0.1.0',
    description='RPC messaging on kombu/RabbitMQ with image transfer '
                'endpoints and a batch conductor',
    long_description=long_description,
    long_description_content_type='text/markdown',
    python_requires='>=3.11',
    packages=find_packages(exclude=['rpcmq.tests', 'rpcmq.tests.*']),
    package_data={'rpcmq.conductor.migrations': ['script.py.mako'],
                  'rpcmq.dashboard': ['templates/*.html', 'static/*']},
    install_requires=[
        'kombu>=5.3',
        # transport/raw.py and the confirmer write frames from several
        # threads: py-amqp locks its shared frame buffer from 5.4.0 on.
        'amqp>=5.4.0',
        'eventlet>=0.36',
        'oslo.config>=9.0',
        'stevedore>=5.0',
        'requests>=2.31',
        'oss2>=2.18',
        # CRC64 of uploads and reads (oss2's crcmod is ~70x slower)
        'fastcrc>=0.5',
        'Pillow>=10.0',
        'SQLAlchemy>=2.0',
        'alembic>=1.13',
        'redis>=5.0',
        'paho-mqtt>=2.0',
        'rich>=13.0',
        'prometheus_client>=0.17',
        # rpcmq-dashboard and `rpcmq demo --dashboard`
        'starlette>=0.37',
        'uvicorn>=0.29',
        'Jinja2>=3.1',
        'python-multipart>=0.0.9',
    ],
    extras_require={
        'postgres': ['psycopg2-binary>=2.9'],
        'otel': ['opentelemetry-api>=1.20'],
        'test': ['pytest>=8', 'pytest-timeout>=2.3', 'psycopg2-binary>=2.9',
                 'pika>=1.3', 'oslo.messaging>=14',
                 'opentelemetry-api>=1.20', 'opentelemetry-sdk>=1.20',
                 'ruff>=0.5', 'httpx>=0.27', 'playwright>=1.40'],
    },
    entry_points={
        'console_scripts': [
            'rpcmq = rpcmq.cmd.cli:main',
            'rpcmq-server = rpcmq.cmd.server:main',
            'rpcmq-conductor = rpcmq.cmd.conductor:main',
            'rpcmq-bridge-redis = rpcmq.cmd.bridge_redis:main',
            'rpcmq-bridge-mqtt = rpcmq.cmd.bridge_mqtt:main',
            'rpcmq-dashboard = rpcmq.cmd.dashboard:main',
        ],
        'rpcmq.drivers': [
            'rabbit = rpcmq.transport.rabbit:RabbitDriver',
            'amqp = rpcmq.transport.rabbit:RabbitDriver',
            'amqps = rpcmq.transport.rabbit:RabbitDriver',
            'redis = rpcmq.transport.drivers:RedisDriver',
            'memory = rpcmq.transport.drivers:MemoryDriver',
        ],
        'rpcmq.executors': [
            'eventlet = rpcmq.executors.green:EventletExecutor',
            'threading = rpcmq.executors.threads:ThreadingExecutor',
        ],
        'rpcmq.endpoints': [
            'image = rpcmq.endpoints.image:ImageEndpoint',
            'diag = rpcmq.endpoints.diag:DiagEndpoint',
        ],
        'rpcmq.storage': [
            'file = rpcmq.storage.file:FileStore',
            'oss = rpcmq.storage.oss:OSSStore',
        ],
        'oslo.config.opts': [
            'rpcmq = rpcmq.conf:list_opts',
        ],
    },
    classifiers=[
        'Programming Language :: Python :: 3',
        'License :: OSI Approved :: Apache Software License',
    ],
)
