import org.jetbrains.kotlin.gradle.dsl.JvmTarget

plugins {
    alias(libs.plugins.android.application)
    alias(libs.plugins.kotlin.android)
}

android {
    // Equal to mtz_mobile/contract.py APP_PACKAGE: `mtz-mobile push --app dev.mtzmobile.demo`
    // writes files/model.tflite of this application (tests/test_android_contract.py checks it).
    namespace = "dev.mtzmobile.demo"
    compileSdk = 35

    defaultConfig {
        applicationId = "dev.mtzmobile.demo"
        minSdk = 24
        targetSdk = 35
        versionCode = 1
        versionName = "0.1.0"
        testInstrumentationRunner = "androidx.test.runner.AndroidJUnitRunner"
    }

    buildTypes {
        release {
            isMinifyEnabled = false
        }
    }

    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }

    androidResources {
        // Stored uncompressed: the app streams it once into a file it maps (ModelFile.copyAssetOnce).
        noCompress.add("tflite")
    }
}

kotlin {
    compilerOptions {
        jvmTarget.set(JvmTarget.JVM_17)
    }
}

dependencies {
    implementation(libs.litert)

    androidTestImplementation(libs.junit)
    androidTestImplementation(libs.androidx.test.ext.junit)
    androidTestImplementation(libs.androidx.test.runner)
}
